"""Is an atlas folder complete and made for this model? Every problem as a plain sentence.

For an atlas taken from the Hub cache (atlas_repo.py) before the app trusts it: a partial
download, a repo of another model or a corrupt file must be reported, not crash a tab later.
Only headers are read (safetensors `safe_open`), never the tensors.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError, safe_open

from ..activations import parse_hookpoint
from ..atlas.info import UnknownVersion, info_from_json
from ..atlas.layout import (
    INDEX_META_FILE,
    INDEX_TOKENS_FILE,
    INFO_FILE,
    LAYER_MAP_FILE,
    METRICS_FILE,
    PRESETS_FILE,
    index_dir,
    index_layer_file,
)
from ..atomic import CorruptFile
from ..config import SaeConfig
from ..explore.layermap import KINDS, MAP_TASKS
from ..lm import EMBEDDED, EMBEDDED_ID
from ..sae import CONFIG_FILE, WEIGHTS_FILE
from ..saelens import sae_config_from_saelens

"""Steering presets resolved for the atlas (optional)."""


class AtlasCheckError(ValueError):
    """A prebuilt atlas is incomplete or made for another model; the message says why."""


def expected_shapes(cfg: SaeConfig) -> dict[str, tuple[int, ...]]:
    """The tensors of an SAE's weights file and their shapes (SAELens names)."""
    shapes = {"W_enc": (cfg.d_in, cfg.d_sae), "b_enc": (cfg.d_sae,),
              "W_dec": (cfg.d_sae, cfg.d_in), "b_dec": (cfg.d_in,)}
    if cfg.architecture == "jumprelu":
        shapes["threshold"] = (cfg.d_sae,)
    return shapes


def check_atlas(folder: Path | str, *, model: str, d_model: int) -> list[str]:
    """Every problem that keeps `folder` from serving as an atlas of `model` (width
    `d_model`), each a sentence; [] when it is complete."""
    folder = Path(folder)
    try:
        info = info_from_json(_read_json(folder / INFO_FILE), INFO_FILE)
    except UnknownVersion as err:
        return [f"{err}."]
    except CorruptFile:
        return [f"{folder} is not an atlas: {INFO_FILE} is missing or unreadable."]
    problems = []
    built_for = _model_id(str(info.model))
    if built_for != _model_id(model):
        problems.append(f"The atlas was built for the model {built_for!r}, not {model!r}.")
    hookpoints = []
    for h in info.hookpoints:
        try:
            parse_hookpoint(h)
            hookpoints.append(h)
        except (ValueError, TypeError):
            problems.append(f"{INFO_FILE} names the hookpoint {h!r}, which is not "
                            "layers.N or layers.N.mlp.")
    for h in hookpoints:
        problems += _check_sae(folder, h, d_model)
    metrics = _read_json(folder / METRICS_FILE)
    if not isinstance(metrics, dict):
        problems.append(f"{METRICS_FILE} is missing or unreadable.")
    else:
        problems += [f"{METRICS_FILE} has no entry for {h}." for h in hookpoints
                     if h not in metrics]
    problems += _check_layer_map(folder, hookpoints)
    problems += _check_feature_index(folder, hookpoints)
    if (folder / PRESETS_FILE).exists() and _read_json(folder / PRESETS_FILE) is None:
        problems.append(f"{PRESETS_FILE} is not valid JSON.")
    return problems


def _model_id(name: str) -> str:
    return EMBEDDED_ID if name == EMBEDDED else name


def _read_json(path: Path) -> object | None:
    """The parsed file; None when it is missing or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _header(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a safetensors header; SafetensorError/OSError if corrupt."""
    with safe_open(str(path), framework="pt") as f:
        names = f.keys()
        return {k: tuple(f.get_slice(k).get_shape()) for k in names}


def _check_sae(folder: Path, h: str, d_model: int) -> list[str]:
    sub = folder / h
    if not sub.is_dir():
        return [f"The SAE folder {h}/ is missing."]
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (sub / name).is_file()]
    if missing:
        return [f"The SAE of {h} is incomplete: {' and '.join(missing)} missing."]
    raw = _read_json(sub / CONFIG_FILE)
    try:
        cfg = sae_config_from_saelens(raw)
    except (ValueError, KeyError, TypeError) as err:
        return [f"{h}/{CONFIG_FILE} is not a readable SAE config ({err})."]
    problems = []
    if cfg.d_in != d_model:
        problems.append(f"The SAE of {h} reads width {cfg.d_in}, but the model has "
                        f"d_model={d_model}.")
    if "median_norm" not in raw.get("metadata", {}):
        problems.append(f"{h}/{CONFIG_FILE} has no median_norm in its metadata.")
    try:
        shapes = _header(sub / WEIGHTS_FILE)
    except (SafetensorError, OSError) as err:
        return [*problems, f"{h}/{WEIGHTS_FILE} is corrupt or truncated ({err})."]
    for name, shape in expected_shapes(cfg).items():
        if name not in shapes:
            problems.append(f"{h}/{WEIGHTS_FILE} has no tensor {name}.")
        elif shapes[name] != shape:
            problems.append(f"{h}/{WEIGHTS_FILE}: {name} has shape {list(shapes[name])}, but "
                            f"{CONFIG_FILE} (d_in={cfg.d_in}, d_sae={cfg.d_sae}) needs "
                            f"{list(shape)}.")
    return problems


def _check_layer_map(folder: Path, hookpoints: list[str]) -> list[str]:
    path = folder / LAYER_MAP_FILE
    meta_path = path.with_suffix(".json")
    missing = [p.name for p in (path, meta_path) if not p.is_file()]
    if missing:
        return [f"The layer map is missing ({', '.join(missing)})."]
    meta = _read_json(meta_path)
    try:
        keys = set(_header(path))
    except (SafetensorError, OSError) as err:
        return [f"The layer map {LAYER_MAP_FILE} is corrupt or truncated ({err})."]
    if not isinstance(meta, dict):
        return [f"The layer map's {meta_path.name} is not valid JSON."]
    lacking = [h for h in hookpoints if h not in meta.get("hookpoints", []) or any(
        f"{kind}/{h}/{task}" not in keys for kind in KINDS for task in MAP_TASKS)]
    if lacking:
        return [f"The layer map has no counts for {', '.join(lacking)}."]
    return []


def _check_feature_index(folder: Path, hookpoints: list[str]) -> list[str]:
    where = index_dir(folder)
    meta = _read_json(where / INDEX_META_FILE)
    if not isinstance(meta, dict):
        return [f"The feature index is missing or unfinished ({where.name}/{INDEX_META_FILE})."]
    problems = []
    for path in [where / INDEX_TOKENS_FILE, *(index_layer_file(folder, h) for h in hookpoints)]:
        name = path.relative_to(folder).as_posix()
        if not path.is_file():
            problems.append(f"The feature index file {name} is missing.")
            continue
        try:
            _header(path)
        except (SafetensorError, OSError) as err:
            problems.append(f"The feature index file {name} is corrupt or truncated ({err}).")
    lacking = [h for h in hookpoints if h not in meta.get("layers", {})]
    if lacking:
        problems.append(f"The feature index ({INDEX_META_FILE}) does not cover "
                        f"{', '.join(lacking)}.")
    return problems
