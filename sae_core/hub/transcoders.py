"""Converters for the transcoder layouts, with each suite's math as SAELens 6.54.12 and
EleutherAI sparsify read it. A transcoder of block N reads `layers.N.mlp_in` (the MLP's
input, after the pre-MLP norm) and predicts `layers.N.mlp` (transcoder.py):
y_hat = act(x @ W_enc + b_enc) @ W_dec + b_dec (+ x @ W_skip.T). No suite subtracts b_dec
from the input (it is an output bias). Sizes come from the tensors, never from names.

- gemma_2_transcoder (Gemma Scope, `gemma-scope-2b-pt-transcoders`):
  `layer_N/width_W/average_l0_X/params.npz`, W_enc [d, S], W_dec [S, d], b_enc, b_dec,
  threshold; JumpReLU; reads `blocks.N.ln2.hook_normalized`, predicts `hook_mlp_out`.
- gemma_3_transcoder (Gemma Scope 2 `transcoder*/layer_L_width_W_l0_S[_affine]` folders,
  listed under SAELens's `gemma_3`): `params.safetensors` with lower-case w_enc [d_in, S],
  w_dec [S, d_out], b_enc, b_dec [d_out], threshold; `_affine` folders add
  affine_skip_connection [d_in, d_out], so W_skip is its transpose; optional config.json.
- sparsify with `transcode: true` (EleutherAI skip transcoders, folder `layers.N.mlp`):
  encoder.weight [S, d_in], encoder.bias, W_dec [S, d_out], b_dec [d_out], W_skip
  [d_out, d_in] with `skip_connection`; topk(relu(encoder(x))).
- mwhanna_transcoder (Qwen 3): one file `layer_N.safetensors`, W_enc [S, d_in] (SAELens
  transposes it), b_enc, W_dec [S, d_out], b_dec; ReLU; reads `blocks.N.mlp.hook_in`.
- Cross-layer transcoders (mntss_clt_layer_transcoder, Gemma Scope 2 `clt/`) are refused:
  one layer's latents write to every later MLP, which one `Sae` cannot hold.

`with_transcoders` adds these to the layout table and routes the transcoder folders of
the SAE layouts (gemma_2, gemma_3, sparsify) here.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from torch import Tensor

from ..activations import parse_hookpoint
from ..config import SaeConfig
from ..transcoder import mlp_sites
from .convert import Converted, Where, build_sae, hookpoint_of, shape_of, take
from .fetch import HubError
from .hook_names import hook_of
from .suites import gemma_2_model, gemma_3_model

CLT_REFUSAL = "cross-layer transcoders are not supported"
TRANSCODER_LAYOUTS = {
    "gemma_2_transcoder": ("", "params.npz", False),
    "gemma_3_transcoder": ("config.json", "params.safetensors", True),
    "mwhanna_transcoder": ("", "", False),
    "mntss_clt_layer_transcoder": ("", "", False),
}
"""Layout key -> (config file, weights file, config optional), as formats.Layout takes them."""
CLT_RE = re.compile(r"(^|/)clt(/|_|$)")


def _layer(where: Where) -> int:
    for text in (where.path, where.given_hook, where.repo_id):
        if m := re.search(r"(?:layer_|blocks\.|layers\.)(\d+)", text):
            return int(m.group(1))
    raise HubError(f"{where.what}: no layer number in its path")


def _sites(where: Where, hookpoint: str | None) -> tuple[str, str]:
    """(what the transcoder reads, what it predicts): from the MLP hookpoint a sparsify folder
    names, else from the release's hook (hook_names.hook_of: `blocks.N.hook_mlp_in`,
    `mlp.hook_in`, `ln2.hook_normalized`), else from the layer in the path."""
    if hookpoint:
        return mlp_sites(parse_hookpoint(hookpoint)[0])
    if where.given_hook:
        found = hook_of(where.given_hook)
        if not found.hookpoint_in:
            raise HubError(f"{where.what}: its hook {where.given_hook} is no MLP input, which "
                           "a transcoder reads")
        return found.hookpoint_in, found.hookpoint
    return mlp_sites(_layer(where))


def _check_names(tensors: dict[str, Tensor], known: set[str], what: str) -> None:
    """Unknown tensors are refused: ignoring one (a skip, a scale) would change the math."""
    if extra := sorted(set(tensors) - known):
        raise HubError(f"{what}: unexpected tensors {extra} (this layout has {sorted(known)})")


def _build(where: Where, weights: dict[str, Tensor], *, architecture: str, k: int = 32,
           model_name: str = "", hookpoint: str | None = None) -> Converted:
    """A transcoder from block N's MLP input to its output (sizes from `weights`)."""
    d_sae, d_in = weights["W_enc_SD"].shape
    reads, writes = _sites(where, hookpoint)
    cfg = SaeConfig(d_in=d_in, d_sae=d_sae, architecture=architecture, k=k,
                    hookpoint=hookpoint or writes, hookpoint_in=reads,
                    d_out=weights["W_dec"].shape[1], skip="W_skip" in weights,
                    model_name=where.trained_for or model_name, apply_b_dec_to_input=False)
    return Converted(build_sae(cfg, weights, where.what), "none")


def from_gemma_2_transcoder(cfg: dict, arrays: dict[str, Tensor], where: Where) -> Converted:
    """Gemma Scope transcoders: JumpReLU, no skip; npz names as stored (W_enc, ...), or
    lower-case, as SAELens accepts both."""
    what, arrays = where.what, {k.replace("w_", "W_", 1): v for k, v in arrays.items()}
    _check_names(arrays, {"W_enc", "W_dec", "b_enc", "b_dec", "threshold"}, what)
    d_in, d_sae = shape_of(arrays, "W_enc", 2, what)
    d_out = shape_of(arrays, "W_dec", 2, what)[1]
    return _build(where, {
        "W_enc_SD": take(arrays, "W_enc", (d_in, d_sae), what).T,
        "b_enc": take(arrays, "b_enc", (d_sae,), what),
        "W_dec": take(arrays, "W_dec", (d_sae, d_out), what),
        "b_dec": take(arrays, "b_dec", (d_out,), what),
        "threshold": take(arrays, "threshold", (d_sae,), what),
    }, architecture="jumprelu", model_name=gemma_2_model(where.repo_id))


def from_gemma_3_transcoder(cfg: dict, tensors: dict[str, Tensor], where: Where) -> Converted:
    """Gemma Scope 2 transcoders: JumpReLU; `_affine` ones add x @ A, A [d_in, d_out]."""
    what = where.what
    if CLT_RE.search(where.path):
        raise HubError(f"{what}: {CLT_REFUSAL}")
    if cfg.get("architecture", "jump_relu") != "jump_relu":
        raise HubError(f"{what}: unexpected architecture {cfg.get('architecture')!r} "
                       "(Gemma Scope 2 transcoders are jump_relu)")
    _check_names(tensors, {"w_enc", "w_dec", "b_enc", "b_dec", "threshold",
                           "affine_skip_connection"}, what)
    affine = "affine_skip_connection" in tensors
    said = cfg.get("affine_connection", where.path.endswith("_affine") or None)
    if said is not None and bool(said) != affine:
        raise HubError(f"{what}: the folder or config says affine={bool(said)} but the "
                       f"file {'has' if affine else 'lacks'} affine_skip_connection")
    d_in, d_sae = shape_of(tensors, "w_enc", 2, what)
    d_out = shape_of(tensors, "w_dec", 2, what)[1]
    weights = {"W_enc_SD": take(tensors, "w_enc", (d_in, d_sae), what).T,
               "b_enc": take(tensors, "b_enc", (d_sae,), what),
               "W_dec": take(tensors, "w_dec", (d_sae, d_out), what),
               "b_dec": take(tensors, "b_dec", (d_out,), what),
               "threshold": take(tensors, "threshold", (d_sae,), what)}
    if affine:  # stored (d_in, d_out); x @ A is x @ W_skip.T with W_skip = A.T
        weights["W_skip"] = take(tensors, "affine_skip_connection", (d_in, d_out), what).T
    return _build(where, weights, architecture="jumprelu",
                  model_name=gemma_3_model(cfg, where.repo_id))


def from_sparsify_transcoder(cfg: dict, tensors: dict[str, Tensor], where: Where) -> Converted:
    """EleutherAI sparsify with `transcode: true`: topk(relu(encoder(x))), x not shifted by
    b_dec; with `skip_connection`, + x @ W_skip.T. The folder names the MLP module."""
    what = where.what
    if cfg.get("activation", "topk") != "topk":
        raise HubError(f"{what}: unsupported activation {cfg.get('activation')!r} (topk only)")
    hookpoint = hookpoint_of(where.hook or where.path.rsplit("/", 1)[-1])
    if not hookpoint.endswith(".mlp"):
        raise HubError(f"{what}: a transcoder of {hookpoint}; only MLP transcoders "
                       "(layers.N.mlp) are supported")
    skip = bool(cfg.get("skip_connection"))
    _check_names(tensors, {"encoder.weight", "encoder.bias", "W_dec", "b_dec"}
                 | ({"W_skip"} if skip else set()), what)
    d_in = int(cfg["d_in"])
    d_sae = int(cfg.get("num_latents") or d_in * cfg["expansion_factor"])
    d_out = shape_of(tensors, "W_dec", 2, what)[1]
    weights = {"W_enc_SD": take(tensors, "encoder.weight", (d_sae, d_in), what),
               "b_enc": take(tensors, "encoder.bias", (d_sae,), what),
               "W_dec": take(tensors, "W_dec", (d_sae, d_out), what),
               "b_dec": take(tensors, "b_dec", (d_out,), what)}
    if skip:
        weights["W_skip"] = take(tensors, "W_skip", (d_out, d_in), what)
    return _build(where, weights, architecture="topk", k=int(cfg["k"]),
                  model_name=cfg.get("model", ""), hookpoint=hookpoint)


def from_mwhanna_transcoder(cfg: dict, tensors: dict[str, Tensor], where: Where) -> Converted:
    """Qwen 3 transcoders (circuit-tracer): ReLU; W_enc stored one row per latent."""
    what = where.what
    _check_names(tensors, {"W_enc", "b_enc", "W_dec", "b_dec", "W_skip"}, what)
    d_sae = shape_of(tensors, "b_enc", 1, what)[0]
    d_in = shape_of(tensors, "W_enc", 2, what)[1]
    d_out = shape_of(tensors, "W_dec", 2, what)[1]
    weights = {"W_enc_SD": take(tensors, "W_enc", (d_sae, d_in), what),
               "b_enc": take(tensors, "b_enc", (d_sae,), what),
               "W_dec": take(tensors, "W_dec", (d_sae, d_out), what),
               "b_dec": take(tensors, "b_dec", (d_out,), what)}
    if "W_skip" in tensors:
        weights["W_skip"] = take(tensors, "W_skip", (d_out, d_in), what)
    return _build(where, weights, architecture="relu")


def refuse_clt(cfg: dict, tensors: dict[str, Tensor], where: Where) -> Converted:
    raise HubError(f"{where.what}: {CLT_REFUSAL}")


TRANSCODER_CONVERTERS = {
    "gemma_2_transcoder": from_gemma_2_transcoder,
    "gemma_3_transcoder": from_gemma_3_transcoder,
    "mwhanna_transcoder": from_mwhanna_transcoder,
    "mntss_clt_layer_transcoder": refuse_clt,
}


def _is_transcoder(layout: str, cfg: dict, tensors: dict[str, Tensor], where: Where) -> bool:
    """Whether a folder of an SAE layout holds a transcoder (SAELens lists Gemma Scope 2's
    transcoders under `gemma_3`; sparsify marks them in cfg.json)."""
    if layout == "sparsify":
        return bool(cfg.get("transcode"))
    return bool(re.search(r"transcoder|(^|/)clt", f"{where.repo_id}/{where.path}")
                or "affine_skip_connection" in tensors or "hf_hook_point_out" in cfg)


def with_transcoders(converters: dict[str, Callable]) -> dict[str, Callable]:
    """`converters` plus the transcoder layouts, with gemma_2, gemma_3 and sparsify sending
    their transcoder folders here first."""
    own = {"gemma_2": from_gemma_2_transcoder, "gemma_3": from_gemma_3_transcoder,
           "sparsify": from_sparsify_transcoder}

    def routed(layout: str, sae_converter: Callable) -> Callable:
        def convert(cfg: dict, tensors: dict[str, Tensor], where: Where) -> Converted:
            if _is_transcoder(layout, cfg, tensors, where):
                return own[layout](cfg, tensors, where)
            return sae_converter(cfg, tensors, where)
        convert.__doc__ = sae_converter.__doc__
        return convert

    out = {key: routed(key, fn) if key in own else fn for key, fn in converters.items()}
    return out | TRANSCODER_CONVERTERS
