"""Load pretrained SAEs from the Hugging Face Hub: SAELens and EleutherAI sparsify formats.

Only the files one SAE needs are fetched, through `huggingface_hub`'s cache (so its cache
folder, `HF_HUB_OFFLINE` and tokens apply). The format is read from `cfg.json`; one
converter per format turns (config, tensors) into our `Sae`. Weights are safetensors only.
Hook names map onto our hookpoints, which name module *outputs*:
  SAELens  blocks.N.hook_resid_post -> layers.N, blocks.N.hook_resid_pre -> layers.{N-1},
           blocks.N.hook_mlp_out -> layers.N.mlp
  sparsify layers.N -> layers.N, layers.N.mlp -> layers.N.mlp (module names, like ours)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import torch
from huggingface_hub import constants
from torch import Tensor

from .config import SaeConfig
from .hub_fetch import HubError, fetch, join, read_json, read_tensors, revision_of, safe_path
from .hub_registry import RELEASES, Release, same_model
from .lm import LM
from .sae import Sae

__all__ = ["CONVERTERS", "HubError", "PretrainedSet", "SaeSource", "check_model",
           "fold_input_scale", "hookpoint_of", "load_pretrained", "load_sae"]

CFG_FILE = "cfg.json"
WEIGHTS = {"saelens": "sae_weights.safetensors", "sparsify": "sae.safetensors"}
TL_HOOK_RE = re.compile(r"^blocks\.(\d+)\.(hook_resid_post|hook_resid_pre|hook_mlp_out)$")
MODULE_RE = re.compile(r"^(?:model\.|transformer\.|gpt_neox\.)?(?:layers|h)\.(\d+)(\.mlp)?$")
SUPPORTED_HOOKS = ("blocks.N.hook_resid_post, blocks.N.hook_resid_pre (N >= 1), "
                   "blocks.N.hook_mlp_out (SAELens); layers.N, layers.N.mlp (sparsify)")


@dataclass(frozen=True)
class SaeSource:
    repo_id: str
    path: str
    """Folder of this SAE inside the repo ("" for the repo root)."""
    revision: str
    """Commit hash of the snapshot the files came from."""
    format: str
    trained_for: str
    """The model the SAE was trained on, as its files (or the registry) name it."""


@dataclass(frozen=True)
class PretrainedSet:
    saes: dict[str, Sae]
    """Our hookpoint -> SAE, in layer order."""
    sources: dict[str, SaeSource]
    repo_id: str
    release: str | None
    warnings: tuple[str, ...] = ()
    needs_scale: tuple[str, ...] = field(default=())
    """Hookpoints whose SAE expects inputs scaled to norm sqrt(d_in) (SAELens
    `expected_average_only_in`) and got no factor: estimate one on a corpus, then
    `fold_input_scale`, before encoding anything."""

    @property
    def revision(self) -> str:
        return ",".join(sorted({s.revision for s in self.sources.values()}))


class Converted(NamedTuple):
    sae: Sae
    normalize: str
    """"none" or "expected_average_only_in" (inputs scaled by a constant)."""


# ---- hook names and format converters ---------------------------------------------------

def hookpoint_of(hook: str) -> str:
    """Our hookpoint for a TransformerLens hook name or a module name."""
    if m := TL_HOOK_RE.match(hook):
        layer, kind = int(m.group(1)), m.group(2)
        if kind == "hook_resid_pre":
            if layer == 0:
                raise HubError(f"{hook} reads the token embeddings, which have no hookpoint here "
                               f"(supported: {SUPPORTED_HOOKS})")
            return f"layers.{layer - 1}"
        return f"layers.{layer}" + (".mlp" if kind == "hook_mlp_out" else "")
    if m := MODULE_RE.match(hook):
        return f"layers.{m.group(1)}" + (".mlp" if m.group(2) else "")
    raise HubError(f"hook {hook!r} has no hookpoint here (supported: {SUPPORTED_HOOKS})")


def _take(tensors: dict[str, Tensor], name: str, shape: tuple[int, ...], what: str) -> Tensor:
    if name not in tensors:
        raise HubError(f"{what}: tensor {name!r} is missing (has {sorted(tensors)})")
    if tuple(tensors[name].shape) != shape:
        raise HubError(f"{what}: tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                       f"the config says {shape}")
    return tensors[name].float()


def _fill(sae: Sae, weights: dict[str, Tensor]) -> Sae:
    with torch.no_grad():
        for name, value in weights.items():
            getattr(sae, name).copy_(value)
    return sae


def from_saelens(cfg: dict, tensors: dict[str, Tensor], hook: str, what: str) -> Converted:
    """SAELens v6 (nested `metadata`) and pre-6.0 (flat, `hook_point`, `activation_fn_str`)."""
    meta = cfg.get("metadata") or {}
    act = cfg.get("activation_fn") or cfg.get("activation_fn_str") or "relu"
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    arch = cfg.get("architecture") or "standard"
    if arch == "standard" and act == "topk":  # pre-6.0 TopK
        arch = "topk"
    ours = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu"}.get(arch)
    if ours is None or (ours == "relu" and act != "relu"):
        raise HubError(f"{what}: unsupported architecture {arch!r} (activation {act!r}); "
                       "supported: standard (ReLU), topk, jumprelu")
    if ours == "topk" and not k:
        raise HubError(f"{what}: a topk SAE without k")
    head = meta.get("hook_head_index", cfg.get("hook_head_index", cfg.get("hook_point_head_index")))
    if cfg.get("rescale_acts_by_decoder_norm") or head is not None:
        raise HubError(f"{what}: rescale_acts_by_decoder_norm / per-head SAEs are not supported")
    norm = cfg.get("normalize_activations") or "none"
    norm = {True: "expected_average_only_in", False: "none"}.get(norm, norm)
    if norm not in ("none", "expected_average_only_in"):
        raise HubError(f"{what}: normalize_activations={norm!r} is not supported")
    if "scaling_factor" in tensors and not torch.all(tensors["scaling_factor"] == 1):
        raise HubError(f"{what}: a finetuning scaling factor is not supported")
    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    hookpoint = meta.get("sae_atlas_hookpoint") or hookpoint_of(
        meta.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point") or hook)
    sae = Sae(SaeConfig(
        d_in=d_in, d_sae=d_sae, architecture=ours, k=int(k or 32), hookpoint=hookpoint,
        model_name=meta.get("model_name") or cfg.get("model_name") or "",
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
    ))
    weights = {"W_enc_SD": _take(tensors, "W_enc", (d_in, d_sae), what).T,
               "b_enc": _take(tensors, "b_enc", (d_sae,), what),
               "W_dec": _take(tensors, "W_dec", (d_sae, d_in), what),
               "b_dec": _take(tensors, "b_dec", (d_in,), what)}
    if ours == "jumprelu":
        if "threshold" not in tensors and "log_threshold" in tensors:
            tensors = tensors | {"threshold": tensors["log_threshold"].float().exp()}
        weights["threshold"] = _take(tensors, "threshold", (d_sae,), what)
    return Converted(_fill(sae, weights), norm)


def from_sparsify(cfg: dict, tensors: dict[str, Tensor], hook: str, what: str) -> Converted:
    """EleutherAI sparsify: topk(relu(encoder(x - b_dec))); the folder name is the module."""
    if cfg.get("activation", "topk") != "topk" or cfg.get("transcode"):
        raise HubError(f"{what}: unsupported architecture (activation "
                       f"{cfg.get('activation')!r}, transcode={cfg.get('transcode', False)})")
    if cfg.get("skip_connection") or "W_skip" in tensors:
        raise HubError(f"{what}: SAEs with a skip connection are not supported")
    d_in = int(cfg["d_in"])
    d_sae = int(cfg.get("num_latents") or d_in * cfg["expansion_factor"])
    sae = Sae(SaeConfig(d_in=d_in, d_sae=d_sae, architecture="topk", k=int(cfg["k"]),
                        hookpoint=hookpoint_of(hook), model_name=cfg.get("model", "")))
    return Converted(_fill(sae, {
        "W_enc_SD": _take(tensors, "encoder.weight", (d_sae, d_in), what),
        "b_enc": _take(tensors, "encoder.bias", (d_sae,), what),
        "W_dec": _take(tensors, "W_dec", (d_sae, d_in), what),
        "b_dec": _take(tensors, "b_dec", (d_in,), what),
    }), "none")


Converter = Callable[[dict, dict[str, Tensor], str, str], Converted]
CONVERTERS: dict[str, Converter] = {"saelens": from_saelens, "sparsify": from_sparsify}


def detect_format(cfg: dict, what: str) -> str:
    if "d_sae" in cfg:
        return "saelens"
    if "num_latents" in cfg or "expansion_factor" in cfg:
        return "sparsify"
    raise HubError(f"{what}: neither a SAELens config (d_sae) nor a sparsify one "
                   "(num_latents / expansion_factor)")


# ---- loading ---------------------------------------------------------------------------

def fold_input_scale(sae: Sae, scale: float) -> None:
    """Make an SAE trained on inputs `x * scale` read raw `x` (as SAELens folds it)."""
    with torch.no_grad():
        sae.W_enc_SD.mul_(scale)
        sae.W_dec.div_(scale)
        sae.b_dec.div_(scale)
    sae.metadata["norm_scaling_factor"] = float(scale)


def load_sae(repo_id: str, path: str, *, revision: str | None = None,
             cache_dir: str | Path | None = None, token: str | None = None,
             hook: str = "", trained_for: str = "") -> tuple[Converted, SaeSource]:
    """One SAE from folder `path` of `repo_id`: cfg.json first, then its format's weights.

    `hook` names what the SAE reads when its config does not (registry SAE ids);
    `trained_for` names its model when its files do not."""
    folder, cache = safe_path(path), Path(cache_dir or constants.HF_HUB_CACHE)
    what = f"{repo_id}/{folder}" if folder else repo_id
    kw = dict(revision=revision, cache_dir=cache, token=token)
    cfg = read_json(fetch(repo_id, join(folder, CFG_FILE), **kw), f"{what}/{CFG_FILE}")
    fmt = detect_format(cfg, what)
    if fmt == "sparsify":
        # The training run's config.json one level up names the model; it is optional.
        parent = str(PurePosixPath(folder).parent).strip(".")
        run_path = fetch(repo_id, join(parent, "config.json"), optional=True, **kw)
        run = read_json(run_path, f"{repo_id}/{join(parent, 'config.json')}") if run_path else {}
        cfg = {"model": run.get("model") or trained_for} | cfg
    elif trained_for:
        cfg = {"model_name": trained_for} | cfg
    weights = fetch(repo_id, join(folder, WEIGHTS[fmt]), **kw)
    try:
        converted = CONVERTERS[fmt](cfg, read_tensors(weights, what),
                                    hook or PurePosixPath(folder).name, what)
    except HubError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise HubError(f"{what}: bad {fmt} config ({type(err).__name__}: {err})") from err
    source = SaeSource(repo_id, folder, revision_of(weights), fmt,
                       converted.sae.cfg.model_name)
    return converted, source


def check_model(sae: Sae, lm: LM, what: str) -> str | None:
    """A clear error when the SAE cannot read this model; a warning when only shapes fit."""
    try:
        lm.module_for(sae.cfg.hookpoint)
    except ValueError as err:
        raise HubError(f"{what} ({sae.cfg.hookpoint}): {err}") from err
    trained_for = sae.cfg.model_name or "an unnamed model"
    if sae.cfg.d_in != lm.d_model:
        raise HubError(f"{what} reads vectors of width {sae.cfg.d_in} but {lm.name} has "
                       f"d_model={lm.d_model}: it was trained for {trained_for}")
    if not same_model(sae.cfg.model_name, lm.name):
        return (f"{what} was trained for {trained_for}, not {lm.name}: only the weights' "
                "shape fits, so features may read the activations differently")
    return None


def parse_ids(sae_ids: str | Sequence[str], release: Release | None) -> list[str]:
    """A list, or a comma-separated string; "all" means every SAE of a registry release."""
    ids = [s.strip() for s in (sae_ids.split(",") if isinstance(sae_ids, str) else sae_ids)]
    ids = [s for s in ids if s]
    if ids == ["all"]:
        if release is None:
            raise HubError("'all' needs a release from the registry; name the SAE folders")
        return release.sae_ids
    if not ids:
        raise HubError("name at least one SAE id or hookpoint (folder in the repo)")
    return ids


def load_pretrained(
    source: str, sae_ids: str | Sequence[str], *, lm: LM | None = None,
    revision: str | None = None, cache_dir: str | Path | None = None, token: str | None = None,
    norm_scaling_factor: float | None = None,
    report: Callable[[str, float], None] | None = None,
) -> PretrainedSet:
    """SAEs from a registry release, a Hub repo id or a local folder, checked against `lm`.

    `sae_ids`: release SAE ids (e.g. `blocks.5.hook_resid_post`) or folders in the repo
    (e.g. `layers.6.mlp`). Nothing is kept unless every SAE loads.
    """
    release = RELEASES.get(source.strip())
    repo_id = release.repo_id if release else source.strip()
    if not repo_id:
        raise HubError("name a release from the registry, a Hub repo id or a local folder")
    saes, sources, warns, pending = {}, {}, [], []
    if release and release.note:
        warns.append(f"{release.name}: {release.note}")
    ids = parse_ids(sae_ids, release)
    for i, sae_id in enumerate(ids):
        if report:
            report(f"fetching {sae_id} from {repo_id} ({i + 1}/{len(ids)})", i / len(ids))
        path = release.path_of(sae_id) if release else sae_id
        (sae, norm), src = load_sae(
            repo_id, path, revision=revision, cache_dir=cache_dir, token=token,
            hook=sae_id if release else "", trained_for=release.model if release else "")
        h = sae.cfg.hookpoint
        if h in saes:
            raise HubError(f"{sae_id} and another SAE both read hookpoint {h}")
        if norm == "expected_average_only_in":
            if norm_scaling_factor is not None:
                fold_input_scale(sae, norm_scaling_factor)
            else:
                pending.append(h)
        if lm is not None and (warning := check_model(sae, lm, f"{repo_id}/{path}")):
            warns.append(warning)
        sae.metadata |= {"source_repo": repo_id, "source_path": src.path,
                         "source_revision": src.revision, "source_format": src.format}
        saes[h], sources[h] = sae, src
    order = sorted(saes, key=lambda h: (int(h.split(".")[1]), h))
    return PretrainedSet({h: saes[h] for h in order}, {h: sources[h] for h in order}, repo_id,
                         release.name if release else None, tuple(dict.fromkeys(warns)),
                         tuple(pending))
