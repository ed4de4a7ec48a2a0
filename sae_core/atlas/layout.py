"""The on-disk layout of an atlas (every file name of an atlas folder is here), and an
atlas loaded in memory.

checkpoints/atlas/<name>/
  atlas.json           the record (info.py): model, corpus, training config, held-out
                       window ids, the SAE files' digests and fingerprint, tokens, timings
  metrics.json         per hookpoint: FVU, L0, dead latents, CE loss recovered
  layers.N/            cfg.json + sae_weights.safetensors (SAELens layout, saelens.py)
  labels.*             spaCy labels of the corpus (explore/labels.py; kept across rebuilds)
  layer_map.*          the layer map (explore/layermap.py)
  probing.*, names.*, lineage.*   the rest of the layer evidence (explore/evidence.py)
  features/            the feature index: index.json, tokens.safetensors and one
                       <hookpoint>.safetensors per SAE (explore/feature_index.py)
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
from typing import NamedTuple, TypeVar

import torch
from torch import Tensor

from ..atomic import read_json
from ..corpus import split_ids
from ..lm import LM
from ..model_controls import lm_for_atlas
from ..norms import medians_of
from ..sae import Sae
from .fingerprint import sae_fingerprint
from .info import AtlasInfo, info_from_json

ATLAS_ROOT = Path("checkpoints/atlas")
DEFAULT_ATLAS = ATLAS_ROOT / "default"
INFO_FILE = "atlas.json"
METRICS_FILE = "metrics.json"
PRESETS_FILE = "presets.json"
LABELS_STEM = "labels"
LAYER_MAP_FILE = "layer_map.safetensors"
"""With layer_map.json, written last (a derived product's .json is its stamp: read_derived)."""
PROBING_FILE = "probing.json"
NAMES_FILE = "names.safetensors"
LINEAGE_FILE = "lineage.safetensors"
INDEX_DIR = "features"
INDEX_META_FILE = "index.json"
INDEX_TOKENS_FILE = "tokens.safetensors"
CHECKPOINT_DIR = "_checkpoint"
T = TypeVar("T")


class StoredAtlas(NamedTuple):
    """An atlas as read from its folder (load_atlas), before any model runs it."""

    info: AtlasInfo
    metrics: dict[str, dict]
    saes: dict[str, Sae]
    fingerprint: str
    """Of the SAE files read (fingerprint.py), checked against atlas.json's digests."""


def index_dir(folder: Path | str) -> Path:
    return Path(folder) / INDEX_DIR


def index_layer_file(folder: Path | str, hookpoint: str) -> Path:
    return index_dir(folder) / f"{hookpoint}.safetensors"


def is_built(folder: Path | str) -> bool:
    folder = Path(folder)
    return (folder / INFO_FILE).exists() and (folder / METRICS_FILE).exists()


def read_info(folder: Path | str) -> AtlasInfo:
    """The atlas.json of a folder (info.py); FileNotFoundError when it has none, CorruptFile
    when it is damaged, UnknownVersion when it is of a newer format."""
    path = Path(folder) / INFO_FILE
    if not path.exists():
        raise FileNotFoundError(f"{folder} is not a finished atlas (no {INFO_FILE})")
    return info_from_json(read_json(path), str(path))


def heldout_ids(info: AtlasInfo, windows_WL: Tensor) -> Tensor:
    """The ids of the atlas's held-out windows among `windows_WL` (the corpus cut as it was
    at build time): those atlas.json stores, or for older atlases the build's seeded draw.
    ValueError when the corpus no longer cuts into the windows it was built from."""
    n = (info.train_windows or 0) + info.heldout_windows
    if info.train_windows is not None and len(windows_WL) != n:
        raise ValueError(f"the corpus now gives {len(windows_WL)} windows, the atlas was built "
                         f"on {n}: it changed since, so its held-out windows are unknown")
    if info.heldout_ids is not None:
        return torch.tensor(info.heldout_ids, dtype=torch.long)  # cpu: rows of CPU windows
    return split_ids(len(windows_WL), info.heldout_windows)[1]


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


def read_derived(folder: Path | str | None, file: str, load: Callable[[Path], T],
                 fingerprint: str | None = None) -> T | None:
    """A product derived from an atlas's SAEs (layer map, probing, names, lineage) in
    `folder / file`, read by `load` once per version of its .json (written last); None when
    it was never built or was computed from other SAEs than the folder's (stale: its
    `sae_fingerprint` differs); CorruptFile when a file of it is damaged. `fingerprint`:
    the SAEs' as this request already checked it (LoadedAtlas.fingerprint), else checked
    here."""
    if not folder:
        return None
    path = Path(folder) / file
    if not path.with_suffix(".json").exists():
        return None
    value = read_once(path.with_suffix(".json"), lambda: load(path))
    return value if value.sae_fingerprint == (fingerprint or current_fingerprint(folder)) else None


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


def _twins(folder: Path | str) -> list[tuple[Path, AtlasInfo]]:
    """(folder, atlas.json) of the finished atlases next to `folder` (itself included) built
    with its recipe (AtlasInfo.recipe), by name."""
    folder = Path(folder)
    recipe = read_info(folder).recipe()
    infos = [(Path(p), read_info(p)) for p in list_atlases(folder.parent)]
    return [(p, i) for p, i in infos if i.recipe() == recipe]


def control_atlases(folder: Path | str) -> dict[str, Path]:
    """The twins of an atlas through other models, by control kind ("none": the real model;
    "random-init", "shuffled": model_controls.py): atlases next to it with the same recipe
    (`_recipe`) and another control; of several, the one with the same training seed."""
    own = read_info(folder)
    out: dict[str, Path] = {}
    for path, info in _twins(folder):
        if info.control != own.control and (info.control not in out or info.seed == own.seed):
            out[info.control] = path
    return out


def seed_atlases(folder: Path | str) -> dict[int, Path]:
    """The atlases of the same recipe and model (control included) by training seed, this
    one among them: the SAEs of another seed of the same layers (their hookpoints may be a
    subset); of several per seed, this one, else the first by name."""
    own = read_info(folder)
    out = {own.seed: Path(folder)}
    for path, info in _twins(folder):
        if info.control == own.control:
            out.setdefault(info.seed, path)
    return out


def load_atlas(folder: Path) -> StoredAtlas:
    """A finished atlas's record, metrics and SAEs; the SAE files are checked against the
    digests the build recorded (CorruptFile otherwise), once: the fingerprint it returns is
    what every product read with them is keyed by."""
    if not is_built(folder):
        raise FileNotFoundError(f"{folder} is not a finished atlas (no atlas.json/metrics.json)")
    info = read_info(folder)
    fingerprint = sae_fingerprint(folder, info)
    saes = {h: Sae.load(Path(folder) / h) for h in info.hookpoints}
    return StoredAtlas(info, read_metrics(folder), saes, fingerprint)


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
    read. The app keeps one per folder (ui/serving/session.py)."""

    folder: Path
    info: AtlasInfo
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
        return self.info.outlier_factor

    @property
    def corpus(self) -> str:
        return self.info.corpus


def open_with(folder: Path | str, lm: LM) -> LoadedAtlas:
    """A finished atlas read from disk, checked against the model it runs on; its SAEs on
    the model's device."""
    info, metrics, saes, fingerprint = load_atlas(Path(folder))
    lm = lm_for_atlas(lm, info.control, info.control_seed)
    fit_to(saes, lm)
    return LoadedAtlas(Path(folder), info, metrics, saes, lm, fingerprint)
