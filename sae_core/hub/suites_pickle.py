"""Converters for the suites that ship torch pickles (read by torch_weights.read_torch),
with each suite's math as SAELens 6.54.12 reads it. Sizes come from the tensors' shapes.

- dictionary_learning_1: `ae.pt` + `config.json` (`trainer.dict_class`, `layer`, `lm_name`,
  `k`); nn.Linear weights (encoder.weight [S, d], decoder.weight [d, S]) or W_enc [d, S] /
  W_dec [S, d]; AutoEncoder: ReLU, `bias` subtracted; AutoEncoderTopK: TopK; BatchTopK and
  Matryoshka: a threshold (scalar or per latent), b_dec subtracted; JumpReluAutoEncoder:
  threshold, b_dec not subtracted. Reads blocks.{layer}.hook_resid_post.
- qwen_scope: `layer{n}.sae.pt`, W_enc [S, d], W_dec [d, S]; TopK, k from the file or the
  repo name (`...-L0_{k}`); b_dec not subtracted; reads layer n's output.
- goodfire: one `.pth`, encoder_linear / decoder_linear nn.Linear weights; ReLU, b_dec
  (decoder_linear.bias) not subtracted; the layer from the repo or file name (`-l19`).
- deepseek_r1 (qresearch): one `.pt`, encoder / decoder nn.Linear weights; ReLU, b_dec not
  subtracted; the layer from the file name.
"""

from __future__ import annotations

import re

from torch import Tensor

from ..config import SaeConfig
from .convert import Converted, Where, build_sae, hookpoint_of, shape_of, take
from .fetch import HubError

DICT_CLASSES = {"AutoEncoder": ("relu", True), "AutoEncoderTopK": ("topk", True),
                "BatchTopKSAE": ("jumprelu", True), "MatryoshkaBatchTopKSAE": ("jumprelu", True),
                "JumpReluAutoEncoder": ("jumprelu", False)}
"""dictionary_learning class -> (our architecture, b_dec subtracted from the input)."""


def _resid_hook(pattern: str, where: Where) -> str:
    """blocks.N.hook_resid_post, N from the caller's hook or the first match of `pattern`
    in the file name, then the repo name."""
    if where.given_hook:
        return where.given_hook
    for text in (where.path.rsplit("/", 1)[-1], where.repo_id):
        if m := re.search(pattern, text):
            return f"blocks.{int(m.group(1))}.hook_resid_post"
    raise HubError(f"{where.what}: no layer number in the file or repo name (and no hook given)")


def _linear(tensors: dict[str, Tensor], enc: str, dec: str, b_dec: str,
            what: str) -> dict[str, Tensor]:
    """nn.Linear encoder [S, d] (our W_enc_SD as it is) and decoder [d, S] (W_dec transposed)."""
    d_sae, d_in = shape_of(tensors, f"{enc}.weight", 2, what)
    return {"W_enc_SD": tensors[f"{enc}.weight"],
            "b_enc": take(tensors, f"{enc}.bias", (d_sae,), what),
            "W_dec": take(tensors, f"{dec}.weight", (d_in, d_sae), what).T,
            "b_dec": take(tensors, b_dec, (d_in,), what)}


def _sae(weights: dict[str, Tensor], where: Where, hook: str, arch: str = "relu", k: int = 32,
         b_dec_in: bool = False, model: str = "") -> Converted:
    d_sae, d_in = weights["W_enc_SD"].shape
    return Converted(build_sae(SaeConfig(
        d_in=d_in, d_sae=d_sae, architecture=arch, k=k, hookpoint=hookpoint_of(hook),
        model_name=where.trained_for or model, apply_b_dec_to_input=b_dec_in),
        weights, where.what), "none")


def dictionary_learning_weights(t: dict[str, Tensor], what: str) -> dict[str, Tensor]:
    if "encoder.weight" in t:
        b_dec = next((n for n in ("b_dec", "bias", "decoder_bias") if n in t), "b_dec")
        return _linear(t | ({"encoder.bias": t["b_enc"]} if "b_enc" in t else {}),
                       "encoder", "decoder", b_dec, what)
    d_in, d_sae = shape_of(t, "W_enc", 2, what)
    return {"W_enc_SD": t["W_enc"].T, "b_enc": take(t, "b_enc", (d_sae,), what),
            "W_dec": take(t, "W_dec", (d_sae, d_in), what),
            "b_dec": take(t, "b_dec", (d_in,), what)}


def from_dictionary_learning_1(cfg: dict, t: dict[str, Tensor], where: Where) -> Converted:
    what = where.what
    trainer = cfg.get("trainer")
    if not isinstance(trainer, dict):
        raise HubError(f"{what}: config.json has no `trainer` section")
    cls = trainer.get("dict_class")
    if cls not in DICT_CLASSES:
        raise HubError(f"{what}: dictionary class {cls!r} is not supported (supported: "
                       f"{', '.join(DICT_CLASSES)})")
    arch, b_dec_in = DICT_CLASSES[cls]
    w = dictionary_learning_weights(t, what)
    d_sae = w["W_enc_SD"].shape[0]
    if arch == "jumprelu":
        thr = t.get("threshold")
        if thr is None:
            raise HubError(f"{what}: a {cls} without a threshold")
        w["threshold"] = thr.expand(d_sae) if thr.ndim == 0 else take(
            t, "threshold", (d_sae,), what)
    k = int(trainer.get("k") or (t["k"].item() if "k" in t else 0) or 32)
    hook = where.given_hook or f"blocks.{int(trainer['layer'])}.hook_resid_post"
    return _sae(w, where, hook, arch, k, b_dec_in, str(trainer.get("lm_name", "")))


def qwen_scope_k(t: dict[str, Tensor], repo_id: str, what: str) -> int:
    """k from the file when it says, else from the repo name (`...-W32K-L0_50`)."""
    if "k" in t:
        return int(t["k"].item())
    if m := re.search(r"L0_(\d+)", repo_id):
        return int(m.group(1))
    raise HubError(f"{what}: no k in the file nor in the repo name (…-L0_<k>)")


def from_qwen_scope(cfg: dict, t: dict[str, Tensor], where: Where) -> Converted:
    what = where.what
    d_sae, d_in = shape_of(t, "W_enc", 2, what)
    w = {"W_enc_SD": t["W_enc"], "b_enc": take(t, "b_enc", (d_sae,), what),
         "W_dec": take(t, "W_dec", (d_in, d_sae), what).T,
         "b_dec": take(t, "b_dec", (d_in,), what)}
    m = re.search(r"SAE-Res-(.+)-W\d+K", where.repo_id)
    return _sae(w, where, _resid_hook(r"layer(\d+)", where), "topk",
                qwen_scope_k(t, where.repo_id, what), model=f"Qwen/{m.group(1)}" if m else "")


def from_goodfire(cfg: dict, t: dict[str, Tensor], where: Where) -> Converted:
    w = _linear(t, "encoder_linear", "decoder_linear", "decoder_linear.bias", where.what)
    m = re.search(r"Goodfire/(.+)-SAE-l\d+", where.repo_id)
    return _sae(w, where, _resid_hook(r"-l(\d+)", where), model=f"meta-llama/{m.group(1)}"
                if m else "")


def from_deepseek_r1(cfg: dict, t: dict[str, Tensor], where: Where) -> Converted:
    w = _linear(t, "encoder", "decoder", "decoder.bias", where.what)
    return _sae(w, where, _resid_hook(r"l(\d+)", where),
                model="deepseek-ai/DeepSeek-R1-Distill-Llama-8B")


def detect_pickle(t: dict[str, Tensor], path: str) -> str:
    """The layout of a single `.pt`/`.pth` file from its name and tensor names."""
    if "encoder_linear.weight" in t:
        return "goodfire"
    if re.search(r"layer\d+\.sae\.pt$", path) or "W_enc" in t:
        return "qwen_scope"
    if "encoder.weight" in t:
        return "deepseek_r1"
    raise HubError(f"{path}: tensors {sorted(t)[:8]} match no known single-file layout "
                   "(qwen_scope, goodfire, deepseek_r1)")


PICKLE_CONVERTERS = {"dictionary_learning_1": from_dictionary_learning_1,
                     "qwen_scope": from_qwen_scope, "goodfire": from_goodfire,
                     "deepseek_r1": from_deepseek_r1}
