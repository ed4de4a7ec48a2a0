"""What every reader of activations shares: hookpoint names, the massive-activation rule
and typical residual norms.

Hookpoints name the module whose *output* they read, as EleutherAI sparsify does:
`layers.N` is the residual stream after block N (HF `hidden_states[N + 1]`) and
`layers.N.mlp` is block N's MLP output.

Massive activations (DESIGN.md): in SmolLM2 position 0 of every window, and a few other
tokens, have residual norms 10-100x the layer's median and carry almost all the variance.
Training, evaluation, the indexes, the live view and steering all skip position 0 and
tokens over `OUTLIER_FACTOR` x the layer's median norm (`keep_mask`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .corpus import load_texts, token_windows
from .hooks import run_captured

if TYPE_CHECKING:
    from .lm import LM
    from .sae import Sae

HOOKPOINT_RE = re.compile(r"^layers\.(\d+)(\.mlp)?$")
OUTLIER_FACTOR = 10.0
"""Tokens whose norm exceeds this many times the layer's median are massive activations."""


def parse_hookpoint(hookpoint: str) -> tuple[int, bool]:
    """(layer, is_mlp) of `layers.N` or `layers.N.mlp`; ValueError for anything else."""
    match = HOOKPOINT_RE.match(hookpoint)
    if not match:
        raise ValueError(f"unknown hookpoint {hookpoint!r}; use 'layers.N' or 'layers.N.mlp'")
    return int(match.group(1)), match.group(2) is not None


def layer_of(hookpoint: str) -> int:
    return parse_hookpoint(hookpoint)[0]


def layer_name(hookpoint: str) -> str:
    """"12" for `layers.12`, "12 mlp" for `layers.12.mlp`."""
    layer, is_mlp = parse_hookpoint(hookpoint)
    return f"{layer} mlp" if is_mlp else str(layer)


def keep_mask(acts_BLD: Tensor, median_norm: float,
              outlier_factor: float = OUTLIER_FACTOR) -> Tensor:
    """(B, L) bool: drop position 0 and massive-activation tokens (norm > factor * median)."""
    keep = acts_BLD.float().norm(dim=-1) <= outlier_factor * median_norm
    keep[:, 0] = False
    return keep


def outlier_factor_of(info: dict) -> float:
    """The token filter an atlas was built with (its atlas.json `train_cfg`)."""
    return float(info.get("train_cfg", {}).get("outlier_factor", OUTLIER_FACTOR))


def medians_of(saes: dict[str, Sae]) -> dict[str, float]:
    """The typical residual norm each SAE was trained (or measured) at, from its metadata."""
    return {h: sae.metadata["median_norm"] for h, sae in saes.items()}


@torch.inference_mode()
def residual_norms(lm: LM, hookpoints: list[str], windows_WL: Tensor, *,
                   outlier_factor: float = OUTLIER_FACTOR,
                   batch: int = 16, bf16: bool = True) -> dict[str, tuple[float, float]]:
    """Per hookpoint (median norm, mean norm of the kept tokens), positions >= 1."""
    norms: dict[str, list[Tensor]] = {h: [] for h in hookpoints}
    for start in range(0, len(windows_WL), batch):
        acts = run_captured(lm, windows_WL[start:start + batch], hookpoints, bf16=bf16)
        for h in hookpoints:
            norms[h].append(acts[h][:, 1:].float().norm(dim=-1).flatten())
    out = {}
    for h, parts in norms.items():
        n = torch.cat(parts)
        median = float(n.median())
        out[h] = (median, float(n[n <= outlier_factor * median].mean()))
    return out


_measured: dict[tuple[str, str], float] = {}


def measure_norms(lm: LM, hookpoints: list[str], texts: list[str], *, n_windows: int = 8,
                  seq_len: int = 128) -> dict[str, float]:
    """Median residual norm per hookpoint over a few corpus windows (position 0 left out)."""
    windows = token_windows(lm.tokenizer, texts[: 4 * n_windows], seq_len)[:n_windows]
    norms = residual_norms(lm, hookpoints, windows, bf16=False)
    return {h: median for h, (median, _) in norms.items()}


def typical_norms(lm: LM, saes: dict[str, Sae], hookpoints: list[str], *,
                  corpus: str = "default") -> tuple[dict[str, float], list[str]]:
    """(norm per hookpoint, hookpoints whose norm was measured now). SAEs trained here carry
    `median_norm` in their metadata; others get it measured once per model and hookpoint."""
    norms, measured = {}, []
    missing = [h for h in hookpoints if "median_norm" not in saes[h].metadata
               and (lm.name, h) not in _measured]
    if missing:
        for h, n in measure_norms(lm, missing, load_texts(corpus)).items():
            _measured[(lm.name, h)] = n
    for h in hookpoints:
        if "median_norm" in saes[h].metadata:
            norms[h] = float(saes[h].metadata["median_norm"])
        else:
            norms[h], measured = _measured[(lm.name, h)], [*measured, h]
    return norms, measured
