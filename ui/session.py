"""What the app serves: models and atlases, each loaded lazily and once, shared by all visitors.

Forward passes from many visitors may run at once: hooks act only in their own thread
(sae_core/hooks.py), so sharing one model is safe.
"""

from __future__ import annotations

import threading
from pathlib import Path

from sae_core.atlas.layout import LoadedAtlas, open_with, read_info
from sae_core.lm import LM, load_named

_lock = threading.Lock()
_models: dict[str, LM] = {}
_atlases: dict[Path, LoadedAtlas] = {}


def model(name: str) -> LM:
    """The LM called `name` (an atlas's `model` field), loaded once."""
    with _lock:
        if name not in _models:
            _models[name] = load_named(name)
        return _models[name]


def register_model(lm: LM) -> None:
    """Serve an already loaded LM under its name (tests, and callers holding a model)."""
    with _lock:
        _models[lm.name] = lm


def open_atlas(folder: Path | str) -> LoadedAtlas:
    """A finished atlas with its SAEs and model, loaded once per folder."""
    key = Path(folder).resolve()
    with _lock:
        if key in _atlases:
            return _atlases[key]
    loaded = open_with(folder, model(read_info(folder)["model"]))
    with _lock:
        return _atlases.setdefault(key, loaded)
