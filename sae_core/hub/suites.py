"""Converters for the suites stored as safetensors or npz, each with its suite's math as
SAELens 6.54.12 reads it (`sae_lens/loading/pretrained_sae_loaders.py`). Sizes come from the
tensors' shapes, never from repo or folder names; names give only what files do not say
(the hook, the model).

Where each SAE reads comes from hook_names.py (the release's hook, else the suite's folder).

- gemma_2 (Gemma Scope): `params.npz`, W_enc [d, S], W_dec [S, d], b_enc, b_dec, threshold;
  JumpReLU, b_dec not subtracted; `embedding/` folders: W_enc / sqrt(d), W_dec * sqrt(d).
- gemma_3 (Gemma Scope 2): `params.safetensors` (w_enc, w_dec, b_enc, b_dec, threshold) +
  optional `config.json`; JumpReLU, b_dec not subtracted.
- llama_scope: `hyperparams.json` + `checkpoints/final.safetensors` (nn.Linear weights);
  scale s = sqrt(d_model) / dataset_average_activation_norm.in folded in: W_enc * s,
  W_dec / s, b_dec / s, threshold = jump_relu_threshold * s (one scalar for all latents).
- llama_scope_r1_distill: `config.json` + `sae_weights.safetensors`; threshold =
  exp(log_jumprelu_threshold), not rescaled; inputs expected at norm sqrt(d) (the caller
  folds the release's scale).
"""

from __future__ import annotations

import math
import re

import torch
from torch import Tensor

from ..config import SaeConfig
from .convert import Converted, Where, build_sae, hookpoint_of, shape_of, take
from .fetch import HubError
from .hook_names import gemma_scope_2_hook, gemma_scope_hook


def _no_transcoder(where: Where) -> None:
    if re.search(r"transcoder|(^|/)clt", f"{where.repo_id}/{where.path}"):
        raise HubError(f"{where.what} is a transcoder (it reads the MLP input, not one "
                       "hookpoint): load it as a transcoder")


def gemma_2_hookpoint(where: Where) -> str:
    """Where a Gemma Scope SAE reads: its hook when given, else the site from the repo name
    (`gemma-scope-2b-pt-res`) and the layer from the folder (`layer_5/width_16k/...`), as
    hook_names.gemma_scope_hook maps them (`-att`: o_proj's input, layers.N.attn_z)."""
    _no_transcoder(where)
    if where.given_hook:
        return hookpoint_of(where.given_hook)
    return gemma_scope_hook(where.repo_id, where.path).hookpoint


def gemma_2_model(repo_id: str) -> str:
    m = re.search(r"gemma-scope-(\d+b)(-it)?", repo_id)
    return f"google/gemma-2-{m.group(1)}{m.group(2) or ''}" if m else ""


def gemma_2_weights(arrays: dict[str, Tensor], path: str, what: str) -> dict[str, Tensor]:
    """Our weights from Gemma Scope's arrays; `embedding/` SAEs were trained on embeddings
    scaled up by sqrt(d) (Gemma's embedding multiplier), so the encoder is divided by it and
    the decoder multiplied (as SAELens does)."""
    d_in, d_sae = shape_of(arrays, "W_enc", 2, what)
    if "scaling_factor" in arrays and not (arrays["scaling_factor"] == 1).all():
        raise HubError(f"{what}: a finetuning scaling factor is not supported")
    w_enc = take(arrays, "W_enc", (d_in, d_sae), what)
    w_dec = take(arrays, "W_dec", (d_sae, d_in), what)
    if "embedding" in path:  # in place: the arrays were just read and are ours
        w_enc, w_dec = w_enc.float().div_(math.sqrt(d_in)), w_dec.float().mul_(math.sqrt(d_in))
    return {"W_enc_SD": w_enc.T, "b_enc": take(arrays, "b_enc", (d_sae,), what),
            "W_dec": w_dec, "b_dec": take(arrays, "b_dec", (d_in,), what),
            "threshold": take(arrays, "threshold", (d_sae,), what)}


def from_gemma_2(cfg: dict, arrays: dict[str, Tensor], where: Where) -> Converted:
    weights = gemma_2_weights(arrays, where.path, where.what)
    d_sae, d_in = weights["W_enc_SD"].shape
    hookpoint = gemma_2_hookpoint(where)
    return Converted(build_sae(SaeConfig(
        d_in=d_in, d_sae=d_sae, architecture="jumprelu", hookpoint=hookpoint,
        model_name=where.trained_for or gemma_2_model(where.repo_id),
        apply_b_dec_to_input=False), weights, where.what), "none")


def gemma_3_model(cfg: dict, repo_id: str) -> str:
    """The HF id of a Gemma Scope 2 SAE's model (SAELens's normalisation of the name)."""
    name = cfg.get("model_name") or repo_id.replace("gemma-scope-2", "gemma-3")
    name = (name if "google" in name else "google/" + name).replace("-v3", "-3")
    return name.replace("-pt", "") if "270m" in name else name


def from_gemma_3(cfg: dict, tensors: dict[str, Tensor], where: Where) -> Converted:
    what = where.what
    _no_transcoder(where)
    if cfg.get("architecture", "jump_relu") != "jump_relu":
        raise HubError(f"{what}: unexpected architecture {cfg.get('architecture')!r} "
                       "(Gemma Scope 2 SAEs are jump_relu)")
    if "affine_skip_connection" in tensors:
        raise HubError(f"{what} has an affine skip connection: load it as a transcoder")
    hook = where.given_hook  # else the folder names the site (hook_names.gemma_scope_2_hook)
    hookpoint = hookpoint_of(hook) if hook else gemma_scope_2_hook(where.path).hookpoint
    d_in, d_sae = shape_of(tensors, "w_enc", 2, what)  # the header's shape, not the name
    weights = {"W_enc_SD": take(tensors, "w_enc", (d_in, d_sae), what).T,
               "b_enc": take(tensors, "b_enc", (d_sae,), what),
               "W_dec": take(tensors, "w_dec", (d_sae, d_in), what),
               "b_dec": take(tensors, "b_dec", (d_in,), what),
               "threshold": take(tensors, "threshold", (d_sae,), what)}
    return Converted(build_sae(SaeConfig(
        d_in=d_in, d_sae=d_sae, architecture="jumprelu", hookpoint=hookpoint,
        model_name=where.trained_for or gemma_3_model(cfg, where.repo_id),
        apply_b_dec_to_input=False), weights, what), "none")


def linear_weights(tensors: dict[str, Tensor], what: str) -> dict[str, Tensor]:
    """OpenMoss (lm-saes) nn.Linear names: encoder.weight [S, d] is our W_enc_SD as it is;
    decoder.weight [d, S] is W_dec transposed."""
    d_sae, d_in = shape_of(tensors, "encoder.weight", 2, what)
    return {"W_enc_SD": tensors["encoder.weight"],
            "b_enc": take(tensors, "encoder.bias", (d_sae,), what),
            "W_dec": take(tensors, "decoder.weight", (d_in, d_sae), what).T,
            "b_dec": take(tensors, "decoder.bias", (d_in,), what)}


def llama_scope_scale(cfg: dict, d_in: int, what: str) -> float:
    """s = sqrt(d_model) / the dataset's average input norm (hyperparams.json)."""
    norm = (cfg.get("dataset_average_activation_norm") or {}).get("in")
    if not isinstance(norm, int | float) or norm <= 0:
        raise HubError(f"{what}: hyperparams.json has no dataset_average_activation_norm.in")
    return math.sqrt(d_in) / norm


def from_llama_scope(cfg: dict, tensors: dict[str, Tensor], where: Where) -> Converted:
    what = where.what
    if cfg.get("act_fn", "jumprelu") != "jumprelu" or "jump_relu_threshold" not in cfg:
        raise HubError(f"{what}: expected a JumpReLU SAE with jump_relu_threshold "
                       f"(act_fn={cfg.get('act_fn')!r})")
    w = linear_weights(tensors, what)
    d_sae, d_in = w["W_enc_SD"].shape
    scale = llama_scope_scale(cfg, d_in, what)
    # Cast once (bf16 on the Hub), then fold in place; the decoder is laid out row-major once.
    w["W_enc_SD"] = w["W_enc_SD"].float().mul_(scale)
    w["W_dec"] = w["W_dec"].to(torch.float32, memory_format=torch.contiguous_format).div_(scale)
    w["b_dec"] = w["b_dec"].float() / scale
    w["threshold"] = torch.full((d_sae,), float(cfg["jump_relu_threshold"]) * scale,
                                device=w["b_enc"].device)
    sae = build_sae(SaeConfig(
        d_in=d_in, d_sae=d_sae, architecture="jumprelu",
        hookpoint=hookpoint_of(cfg.get("hook_point_in") or where.given_hook),
        model_name=where.trained_for or "meta-llama/Llama-3.1-8B",
        apply_b_dec_to_input=False), w, what)
    sae.metadata["norm_scaling_factor"] = scale
    return Converted(sae, "none")


def from_llama_scope_r1_distill(cfg: dict, tensors: dict[str, Tensor],
                                where: Where) -> Converted:
    what = where.what
    w = linear_weights(tensors, what)
    d_sae, d_in = w["W_enc_SD"].shape
    log_thr = tensors.get("log_jumprelu_threshold")
    if log_thr is not None and log_thr.ndim == 0:  # one threshold for every latent
        log_thr = log_thr.expand(d_sae)
    w["threshold"] = take({"log_jumprelu_threshold": log_thr} if log_thr is not None else {},
                          "log_jumprelu_threshold", (d_sae,), what).float().exp()
    return Converted(build_sae(SaeConfig(
        d_in=d_in, d_sae=d_sae, architecture="jumprelu",
        hookpoint=hookpoint_of(cfg.get("hook_point_in") or where.given_hook),
        model_name=where.trained_for or cfg.get("model_name")
        or "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
        apply_b_dec_to_input=False), w, what), "expected_average_only_in")


SUITE_CONVERTERS = {"gemma_2": from_gemma_2, "gemma_3": from_gemma_3,
                    "llama_scope": from_llama_scope,
                    "llama_scope_r1_distill": from_llama_scope_r1_distill}
