"""How well an SAE found a known dictionary, and how it does on held-out rows: pure
functions. A dictionary is defined up to order and sign, so a decoder row matches a true
feature by |cosine|; held-out FVU, L0 and dead latents come from `metrics.RunningFvu`."""

from __future__ import annotations

import torch
from torch import Tensor

from ..metrics import RunningFvu
from ..sae import Sae

EVAL_BATCH = 8192
"""Held-out rows per SAE forward."""


def best_cosines(true_FD: Tensor, dec_SD: Tensor) -> Tensor:
    """(n_features,) the largest |cosine| of each true feature with any decoder row
    (float64, rows normalised here)."""
    true = torch.nn.functional.normalize(true_FD.double(), dim=-1)
    dec = torch.nn.functional.normalize(dec_SD.detach().double().to(true.device), dim=-1)
    return (true @ dec.T).abs().amax(dim=1)


def mmcs(true_FD: Tensor, dec_SD: Tensor) -> float:
    """Mean max cosine similarity: the mean over true features of their best |cosine| with
    any decoder row; 1 when every feature has an exact copy in the decoder."""
    return float(best_cosines(true_FD, dec_SD).mean())


def recovered(true_FD: Tensor, dec_SD: Tensor, bar: float = 0.9) -> float:
    """Share of true features whose best |cosine| with a decoder row is above `bar`."""
    return float((best_cosines(true_FD, dec_SD) > bar).double().mean())


def random_dictionary(n_rows: int, d: int, *, seed: int = 0) -> Tensor:
    """(n_rows, d) random unit rows: the baseline an SAE's decoder must beat (in high
    dimensions random rows are nearly orthogonal to any feature)."""
    rows = torch.randn(n_rows, d, generator=torch.Generator().manual_seed(seed))
    return rows / rows.norm(dim=-1, keepdim=True)


@torch.inference_mode()
def held_out(sae: Sae, x_ND: Tensor, batch: int = EVAL_BATCH) -> RunningFvu:
    """FVU, L0 and firing counts of `sae` over `x_ND`, in batches (on the SAE's device)."""
    run = RunningFvu()
    device = sae.W_dec.device
    for start in range(0, len(x_ND), batch):
        x = x_ND[start:start + batch].to(device).float()
        out = sae(x)
        run.update(x, out.x_hat, out.acts)
    return run


def fvu(sae: Sae, x_ND: Tensor) -> float:
    """Held-out fraction of variance unexplained."""
    return held_out(sae, x_ND).fvu()

