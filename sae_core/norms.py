"""Typical residual norms: the unit of steering strength and of scores across layers, and
the median that the massive-activation rule (activations.py) multiplies.

SAEs trained here carry the median norm of their layer in their metadata (`medians_of`);
others (from the Hub) get it measured on a few corpus windows (`typical_norms`).
"""

from __future__ import annotations

from weakref import WeakKeyDictionary

import torch
from torch import Tensor

from .activations import OUTLIER_FACTOR
from .corpus import load_texts, token_windows
from .hooks import run_captured
from .lm import LM
from .sae import Sae


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


_measured: WeakKeyDictionary = WeakKeyDictionary()
"""model -> {(corpus, hookpoint): median norm}: a model loaded again (or another one under
the same name) is measured again, and a dropped model takes its norms along."""


def measure_norms(lm: LM, hookpoints: list[str], texts: list[str], *, n_windows: int = 8,
                  seq_len: int = 128) -> dict[str, float]:
    """Median residual norm per hookpoint over a few corpus windows (position 0 left out)."""
    windows = token_windows(lm.tokenizer, texts[: 4 * n_windows], seq_len)[:n_windows]
    norms = residual_norms(lm, hookpoints, windows, bf16=False)
    return {h: median for h, (median, _) in norms.items()}


def typical_norms(lm: LM, saes: dict[str, Sae], hookpoints: list[str], *,
                  corpus: str = "default") -> tuple[dict[str, float], list[str]]:
    """(norm per hookpoint, hookpoints whose norm was measured now). SAEs trained here carry
    `median_norm` in their metadata; others get it measured once per model, corpus and
    hookpoint."""
    norms, measured = {}, []
    known = _measured.setdefault(lm.model, {})
    missing = [h for h in hookpoints if "median_norm" not in saes[h].metadata
               and (corpus, h) not in known]
    if missing:
        for h, n in measure_norms(lm, missing, load_texts(corpus)).items():
            known[(corpus, h)] = n
    for h in hookpoints:
        if "median_norm" in saes[h].metadata:
            norms[h] = float(saes[h].metadata["median_norm"])
        else:
            norms[h], measured = known[(corpus, h)], [*measured, h]
    return norms, measured
