"""The Hub's SAE layouts and their converters to our `Sae`: `LAYOUTS` says which files
each layout keeps, `CONVERTERS` maps a layout key (SAELens's `conversion_func` name where
one exists) to its converter. SAELens and sparsify live here, the other suites in
suites.py (safetensors, npz) and suites_pickle.py (torch pickles).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from ..config import SaeConfig
from ..saelens import input_normalization, sae_config_from_saelens
from .convert import (  # noqa: F401 (hookpoint_of and fold_input_scale are used from here)
    Converted,
    Where,
    build_sae,
    fold_input_scale,
    hookpoint_of,
    take,
)
from .fetch import HubError
from .suites import SUITE_CONVERTERS
from .suites_pickle import PICKLE_CONVERTERS
from .transcoders import TRANSCODER_LAYOUTS, with_transcoders

CFG_FILE = "cfg.json"


@dataclass(frozen=True)
class Layout:
    config: str
    """Config file in the SAE's folder ("" for none)."""
    weights: str
    """Weights file in the folder; "" when the SAE's path is the weights file itself."""
    config_optional: bool = False


LAYOUTS: dict[str, Layout] = {
    "saelens": Layout(CFG_FILE, "sae_weights.safetensors"),
    "sparsify": Layout(CFG_FILE, "sae.safetensors"),
    "gemma_2": Layout("", "params.npz"),
    "gemma_3": Layout("config.json", "params.safetensors", config_optional=True),
    "llama_scope": Layout("hyperparams.json", "checkpoints/final.safetensors"),
    "llama_scope_r1_distill": Layout("config.json", "sae_weights.safetensors"),
    "dictionary_learning_1": Layout("config.json", "ae.pt"),
    "qwen_scope": Layout("", ""),
    "goodfire": Layout("", ""),
    "deepseek_r1": Layout("", ""),
}
MARKERS = (("params.safetensors", "gemma_3"), ("params.npz", "gemma_2"),
           ("hyperparams.json", "llama_scope"), ("ae.pt", "dictionary_learning_1"),
           ("config.json", "llama_scope_r1_distill"))
"""Without a known layout, the first of these files present in the folder names it
(after cfg.json, which SAELens and sparsify folders hold)."""


def from_saelens(cfg: dict, tensors: dict[str, Tensor], where: Where) -> Converted:
    """SAELens v6 (nested `metadata`), pre-6.0 (flat, `hook_point`, `activation_fn_str`) and
    transcoders, as the one SAELens reader (sae_core/saelens.py) reads them for `Sae.load`."""
    what = where.what
    try:
        ours = sae_config_from_saelens(cfg, hook=where.hook, model_name=where.trained_for)
        norm = input_normalization(cfg)
    except ValueError as err:
        raise HubError(f"{what}: {err}") from err
    if "scaling_factor" in tensors and not (tensors["scaling_factor"] == 1).all():
        raise HubError(f"{what}: a finetuning scaling factor is not supported")
    d_in, d_sae, d_out = ours.d_in, ours.d_sae, ours.width_out
    weights = {"W_enc_SD": take(tensors, "W_enc", (d_in, d_sae), what).T,
               "b_enc": take(tensors, "b_enc", (d_sae,), what),
               "W_dec": take(tensors, "W_dec", (d_sae, d_out), what),
               "b_dec": take(tensors, "b_dec", (d_out,), what)}
    if ours.architecture == "jumprelu":
        if "threshold" not in tensors and "log_threshold" in tensors:
            tensors = tensors | {"threshold": tensors["log_threshold"].float().exp()}
        weights["threshold"] = take(tensors, "threshold", (d_sae,), what)
    if ours.skip:
        weights["W_skip"] = take(tensors, "W_skip", (d_out, d_in), what)
    return Converted(build_sae(ours, weights, what), norm)


def from_sparsify(cfg: dict, tensors: dict[str, Tensor], where: Where) -> Converted:
    """EleutherAI sparsify: topk(relu(encoder(x - b_dec))); the folder name is the module."""
    what = where.what
    if cfg.get("activation", "topk") != "topk" or cfg.get("transcode"):
        raise HubError(f"{what}: unsupported architecture (activation "
                       f"{cfg.get('activation')!r}, transcode={cfg.get('transcode', False)})")
    if cfg.get("skip_connection") or "W_skip" in tensors:
        raise HubError(f"{what}: SAEs with a skip connection are not supported")
    d_in = int(cfg["d_in"])
    d_sae = int(cfg.get("num_latents") or d_in * cfg["expansion_factor"])
    hook = where.hook or where.path.rsplit("/", 1)[-1]
    return Converted(build_sae(
        SaeConfig(d_in=d_in, d_sae=d_sae, architecture="topk", k=int(cfg["k"]),
                  hookpoint=hookpoint_of(hook), model_name=cfg.get("model", "")), {
            "W_enc_SD": take(tensors, "encoder.weight", (d_sae, d_in), what),
            "b_enc": take(tensors, "encoder.bias", (d_sae,), what),
            "W_dec": take(tensors, "W_dec", (d_sae, d_in), what),
            "b_dec": take(tensors, "b_dec", (d_in,), what)}, what), "none")


Converter = Callable[[dict, dict[str, Tensor], Where], Converted]
CONVERTERS: dict[str, Converter] = {"saelens": from_saelens, "sparsify": from_sparsify,
                                    **SUITE_CONVERTERS, **PICKLE_CONVERTERS}
# Transcoders (transcoders.py): their layouts, and the transcoder folders of gemma_2, gemma_3
# and sparsify routed to them.
CONVERTERS = with_transcoders(CONVERTERS)
LAYOUTS |= {key: Layout(*files) for key, files in TRANSCODER_LAYOUTS.items()}


def detect_format(cfg: dict, what: str) -> str:
    """SAELens or sparsify, from a cfg.json."""
    if "d_sae" in cfg:
        return "saelens"
    if "num_latents" in cfg or "expansion_factor" in cfg:
        return "sparsify"
    raise HubError(f"{what}: neither a SAELens config (d_sae) nor a sparsify one "
                   "(num_latents / expansion_factor)")
