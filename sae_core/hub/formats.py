"""Converters from the Hub's SAE formats to our `Sae`: one short function per format.

Hook names map onto our hookpoints, which name module *outputs*:
  SAELens  blocks.N.hook_resid_post -> layers.N, blocks.N.hook_resid_pre -> layers.{N-1},
           blocks.N.hook_mlp_out -> layers.N.mlp, blocks.N.hook_attn_out -> layers.N.attn
  sparsify layers.N -> layers.N, layers.N.mlp -> layers.N.mlp, layers.N.self_attn ->
           layers.N.attn (module names, like ours)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from ..config import SaeConfig
from ..sae import Sae
from .fetch import HubError

CFG_FILE = "cfg.json"
WEIGHTS = {"saelens": "sae_weights.safetensors", "sparsify": "sae.safetensors"}
TL_HOOK_RE = re.compile(
    r"^blocks\.(\d+)\.(hook_resid_post|hook_resid_pre|hook_mlp_out|hook_attn_out)$")
MODULE_RE = re.compile(r"^(?:model\.|transformer\.|gpt_neox\.)?(?:layers|h)\.(\d+)"
                       r"(?:\.(mlp|self_attn|attn|attention))?$")
SUPPORTED_HOOKS = ("blocks.N.hook_resid_post, blocks.N.hook_resid_pre (N >= 1), "
                   "blocks.N.hook_mlp_out, blocks.N.hook_attn_out (SAELens); layers.N, "
                   "layers.N.mlp, layers.N.self_attn (sparsify)")
TL_SUFFIX = {"hook_resid_post": "", "hook_mlp_out": ".mlp", "hook_attn_out": ".attn"}


class Converted(NamedTuple):
    sae: Sae
    normalize: str
    """"none" or "expected_average_only_in" (inputs scaled by a constant)."""


def hookpoint_of(hook: str) -> str:
    """Our hookpoint for a TransformerLens hook name or a module name."""
    if m := TL_HOOK_RE.match(hook):
        layer, kind = int(m.group(1)), m.group(2)
        if kind == "hook_resid_pre":
            if layer == 0:
                raise HubError(f"{hook} reads the token embeddings, which have no hookpoint here "
                               f"(supported: {SUPPORTED_HOOKS})")
            return f"layers.{layer - 1}"
        return f"layers.{layer}" + TL_SUFFIX[kind]
    if m := MODULE_RE.match(hook):
        sub = m.group(2)
        return f"layers.{m.group(1)}" + ("" if not sub else ".mlp" if sub == "mlp" else ".attn")
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


def fold_input_scale(sae: Sae, scale: float) -> None:
    """Make an SAE trained on inputs `x * scale` read raw `x` (as SAELens folds it)."""
    with torch.no_grad():
        sae.W_enc_SD.mul_(scale)
        sae.W_dec.div_(scale)
        sae.b_dec.div_(scale)
    sae.metadata["norm_scaling_factor"] = float(scale)
