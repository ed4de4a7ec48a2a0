"""The on-disk layout of an atlas, and an atlas loaded in memory.

checkpoints/atlas/<name>/
  atlas.json           model, corpus, training config, held-out window ids, the SAE files'
                       digests and fingerprint, tokens, timings (`read_info`)
  metrics.json         per hookpoint: FVU, L0, dead latents, CE loss recovered
  layers.N/            cfg.json + sae_weights.safetensors (SAELens layout)
  labels.*, layer_map.*  the layer map (explore/layermap.py)
  features/            the feature index (explore/feature_index.py)
  presets.json         steering presets resolved for these SAEs (steer/presets.py)
checkpoints/atlas/.<name>.building/   a build in progress, with _checkpoint/ (the resumable
                       training state); swapped in whole when finished (writing.py)
checkpoints/atlas/.<name>.lock        the atlas's write lock
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor

from ..activations import outlier_factor_of
from ..atomic import read_json
from ..corpus import split_ids
from ..lm import LM
from ..model_controls import lm_for_atlas
from ..norms import medians_of
from ..sae import Sae
from .fingerprint import sae_fingerprint

ATLAS_ROOT = Path("checkpoints/atlas")
DEFAULT_ATLAS = ATLAS_ROOT / "default"
INFO_FILE = "atlas.json"
METRICS_FILE = "metrics.json"
PRESETS_FILE = "presets.json"
"""Steering presets resolved for this atlas (sae_core/steer/presets.py)."""
CHECKPOINT_DIR = "_checkpoint"
T = TypeVar("T")


def is_built(folder: Path | str) -> bool:
    folder = Path(folder)
    return (folder / INFO_FILE).exists() and (folder / METRICS_FILE).exists()


def read_info(folder: Path | str) -> dict:
    """atlas.json of a folder; FileNotFoundError when it has none."""
    path = Path(folder) / INFO_FILE
    if not path.exists():
        raise FileNotFoundError(f"{folder} is not a finished atlas (no {INFO_FILE})")
    return read_json(path)


def heldout_ids(info: dict, windows_WL: Tensor) -> Tensor:
    """The ids of the atlas's held-out windows among `windows_WL` (the corpus cut as it was
    at build time): those atlas.json stores, or for older atlases the build's seeded draw.
    ValueError when the corpus no longer cuts into the windows it was built from."""
    n = info.get("train_windows", 0) + info["heldout_windows"]
    if "train_windows" in info and len(windows_WL) != n:
        raise ValueError(f"the corpus now gives {len(windows_WL)} windows, the atlas was built "
                         f"on {n}: it changed since, so its held-out windows are unknown")
    if "heldout_ids" in info:
        return torch.tensor(info["heldout_ids"], dtype=torch.long)  # cpu: rows of CPU windows
    return split_ids(len(windows_WL), info["heldout_windows"])[1]


def read_metrics(folder: Path | str) -> dict[str, dict]:
    return read_json(Path(folder) / METRICS_FILE)


READ_ONCE_LIMIT = 16
"""Derived files kept in memory at most (a feature index or layer map each); the least
recently used goes first, so a public app's memory stays bounded."""
_read: OrderedDict[Path, tuple[int, object]] = OrderedDict()
_read_lock = threading.Lock()


def read_once(stamp_file: Path, load: Callable[[], T]) -> T:
    """`load()`, run again only when `stamp_file` (the file a writer writes last) changed
    on disk since: derived files (layer map, feature index) are read once per version and
    a rebuilt one is seen by every reader. FileNotFoundError when it is missing."""
    path = Path(stamp_file).resolve()
    stamp = path.stat().st_mtime_ns
    with _read_lock:
        if path in _read and _read[path][0] == stamp:
            _read.move_to_end(path)
            return _read[path][1]
    value = load()
    with _read_lock:
        _read[path] = (stamp, value)
        _read.move_to_end(path)
        while len(_read) > READ_ONCE_LIMIT:
            _read.popitem(last=False)
    return value


def current_fingerprint(folder: Path | str) -> str:
    """The fingerprint of the SAEs in `folder` now (FileNotFoundError, CorruptFile)."""
    return sae_fingerprint(folder, read_info(folder))


def read_derived(folder: Path | str | None, file: str, load: Callable[[Path], T]
                 ) -> T | None:
    """A product derived from an atlas's SAEs (layer map, probing, names, lineage) in
    `folder / file`, read by `load` once per version of its .json (written last); None when
    it was never built or was computed from other SAEs than the folder's (stale: its
    `sae_fingerprint` differs); CorruptFile when a file of it is damaged."""
    if not folder:
        return None
    path = Path(folder) / file
    if not path.with_suffix(".json").exists():
        return None
    value = read_once(path.with_suffix(".json"), lambda: load(path))
    return value if value.sae_fingerprint == current_fingerprint(folder) else None


def forget_reads(folder: Path | str) -> None:
    """Drop what read_once holds of files under `folder` (an atlas rebuilt or removed)."""
    root = Path(folder).resolve()
    with _read_lock:
        for path in [p for p in _read if p.is_relative_to(root)]:
            del _read[path]


def list_atlases(root: Path = ATLAS_ROOT) -> list[str]:
    """The finished atlas folders under `root`, sorted."""
    return sorted(str(p) for p in Path(root).glob("*")
                  if not p.name.startswith(".") and is_built(p))  # not builds in progress


def _recipe(info: dict) -> tuple:
    """What two atlases share when they differ only in the model's control and the SAEs'
    seed: the real model, the corpus and its windows, the training settings but the seed."""
    cfg = {k: v for k, v in info.get("train_cfg", {}).items() if k != "seed"}
    return (info.get("control_of", info.get("model")), info.get("corpus"),
            info.get("seq_len"), info.get("heldout_ids"), sorted(cfg.items(), key=str))


def _twins(folder: Path | str) -> list[tuple[Path, dict]]:
    """(folder, atlas.json) of the finished atlases next to `folder` (itself included) built
    with its recipe, by name."""
    folder = Path(folder)
    recipe = _recipe(read_info(folder))
    infos = [(Path(p), read_info(p)) for p in list_atlases(folder.parent)]
    return [(p, i) for p, i in infos if _recipe(i) == recipe]


def control_atlases(folder: Path | str) -> dict[str, Path]:
    """The twins of an atlas through other models, by control kind ("none": the real model;
    "random-init", "shuffled": model_controls.py): atlases next to it with the same recipe
    (`_recipe`) and another control; of several, the one with the same training seed."""
    own = read_info(folder)
    kind, seed = own.get("control", "none"), own["train_cfg"].get("seed", 0)
    out: dict[str, Path] = {}
    for path, info in _twins(folder):
        other = info.get("control", "none")
        if other != kind and (other not in out or info["train_cfg"].get("seed", 0) == seed):
            out[other] = path
    return out


def seed_atlases(folder: Path | str) -> dict[int, Path]:
    """The atlases of the same recipe and model (control included) by training seed, this
    one among them: the SAEs of another seed of the same layers (their hookpoints may be a
    subset); of several per seed, this one, else the first by name."""
    own = read_info(folder)
    kind = own.get("control", "none")
    out = {own["train_cfg"].get("seed", 0): Path(folder)}
    for path, info in _twins(folder):
        if info.get("control", "none") == kind:
            out.setdefault(info["train_cfg"].get("seed", 0), path)
    return out


def load_atlas(folder: Path) -> tuple[dict, dict[str, dict], dict[str, Sae]]:
    """(atlas info, metrics per hookpoint, SAEs per hookpoint) of a finished build; the SAE
    files are checked against the digests the build recorded (CorruptFile otherwise)."""
    if not is_built(folder):
        raise FileNotFoundError(f"{folder} is not a finished atlas (no atlas.json/metrics.json)")
    info = read_info(folder)
    sae_fingerprint(folder, info)
    saes = {h: Sae.load(Path(folder) / h) for h in info["hookpoints"]}
    return info, read_metrics(folder), saes


def check_fits(saes: dict[str, Sae], lm: LM) -> None:
    """A clear error when SAEs were made for activations of another width."""
    for h, sae in saes.items():
        lm.module_for(h)
        reads = sae.cfg.reads or h  # an SAE made without a hookpoint reads where it is put
        if sae.cfg.d_in != (width := lm.width_of(reads)):
            raise ValueError(f"SAE for {h} reads d_in={sae.cfg.d_in} but {lm.name} has "
                             f"width {width} at {reads}")


def to_device(saes: dict[str, Sae], device: torch.device | str) -> dict[str, Sae]:
    """The SAEs moved (in place) onto `device`; returns the same dict."""
    for sae in saes.values():
        sae.to(device)
    return saes


def fit_to(saes: dict[str, Sae], lm: LM) -> dict[str, Sae]:
    """`check_fits`, then the SAEs onto the LM's device: the LM decides where everything
    runs (encode.py's module doc), so its activations never meet weights elsewhere."""
    check_fits(saes, lm)
    return to_device(saes, lm.device)


@dataclass(frozen=True)
class LoadedAtlas:
    """An atlas with its SAEs and model in memory: what the explore and steer functions
    read. The app keeps one per folder (ui/session.py)."""

    folder: Path
    info: dict
    """atlas.json: model, corpus, hookpoints, training config."""
    metrics: dict[str, dict]
    """metrics.json: per hookpoint FVU, L0, dead latents, CE loss recovered."""
    saes: dict[str, Sae]
    lm: LM
    fingerprint: str = ""
    """Of the SAE files it was read from (fingerprint.py): what caches of it are keyed by."""

    @property
    def hookpoints(self) -> list[str]:
        return list(self.saes)

    @property
    def medians(self) -> dict[str, float]:
        """Typical residual norm per hookpoint (tokens far above it are outliers)."""
        return medians_of(self.saes)

    @property
    def outlier_factor(self) -> float:
        return outlier_factor_of(self.info)

    @property
    def corpus(self) -> str:
        return self.info.get("corpus", "default")


def open_with(folder: Path | str, lm: LM) -> LoadedAtlas:
    """A finished atlas read from disk, checked against the model it runs on; its SAEs on
    the model's device."""
    info, metrics, saes = load_atlas(Path(folder))
    lm = lm_for_atlas(lm, info)
    fit_to(saes, lm)
    return LoadedAtlas(Path(folder), info, metrics, saes, lm, sae_fingerprint(folder, info))
