"""What the app serves: models and atlases, each loaded lazily and once, shared by all visitors.

Forward passes from many visitors may run at once: hooks act only in their own thread
(see hooks.py), so sharing one model is safe.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .atlas import LAYER_MAP_FILE, check_fits, load_atlas, medians_of
from .lm import EMBEDDED, EMBEDDED_ID, LM, load_lm
from .sae import Sae

_lock = threading.Lock()
_models: dict[str, LM] = {}
_atlases: dict[Path, LoadedAtlas] = {}


def model(name: str) -> LM:
    """The LM called `name` (an atlas's `model` field), loaded once."""
    with _lock:
        if name not in _models:
            _models[name] = load_lm(EMBEDDED if name == EMBEDDED_ID else name)
        return _models[name]


def register_model(lm: LM) -> None:
    """Serve an already loaded LM under its name (tests, and callers holding a model)."""
    with _lock:
        _models[lm.name] = lm


@dataclass
class LoadedAtlas:
    folder: Path
    info: dict
    """atlas.json: model, corpus, hookpoints, training config."""
    metrics: dict[str, dict]
    """metrics.json: per hookpoint FVU, L0, dead latents, CE loss recovered."""
    saes: dict[str, Sae]
    lm: LM

    @property
    def hookpoints(self) -> list[str]:
        return list(self.saes)

    @property
    def medians(self) -> dict[str, float]:
        """Typical residual norm per hookpoint (tokens above 10x it are outliers)."""
        return medians_of(self.saes)

    @property
    def layer_map(self):
        """The atlas's LayerMapData, or None when it was never built."""
        return layer_map(self.folder)


def open_atlas(folder: Path | str) -> LoadedAtlas:
    """A finished atlas with its SAEs and model, loaded once per folder."""
    key = Path(folder).resolve()
    with _lock:
        if key in _atlases:
            return _atlases[key]
    info, metrics, saes = load_atlas(Path(folder))
    lm = model(info["model"])
    check_fits(saes, lm)
    loaded = LoadedAtlas(Path(folder), info, metrics, saes, lm)
    with _lock:
        return _atlases.setdefault(key, loaded)


def layer_map(folder: Path | str | None):
    """The LayerMapData of an atlas folder, read once; None when it was never built. The
    layer map tab reads it without loading the model, so it is cached apart from atlases."""
    return _layer_map_at(Path(folder).resolve()) if folder else None


@lru_cache(maxsize=8)
def _layer_map_at(folder: Path):
    from .layermap import LayerMapData

    path = folder / LAYER_MAP_FILE
    return LayerMapData.load(path) if path.exists() else None


def layer_map_built() -> None:
    """Forget cached layer maps (one was just built where none was found before)."""
    _layer_map_at.cache_clear()


def forget(folder: Path | str) -> None:
    """Drop a cached atlas (after it was rebuilt or deleted)."""
    with _lock:
        _atlases.pop(Path(folder).resolve(), None)
