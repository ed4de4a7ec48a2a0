"""Pure functions for SAE quality: FVU, explained variance, L0, dead fraction, CE recovered."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


def total_variance(x_ND: Tensor) -> Tensor:
    """sum over rows of ||x - mean(x)||^2, a 0-dim tensor."""
    return (x_ND - x_ND.mean(0)).pow(2).sum()


def fvu(x_ND: Tensor, x_hat_ND: Tensor, *, total_var: Tensor | None = None) -> Tensor:
    """Fraction of variance unexplained: sum ||x - x_hat||^2 / sum ||x - mean(x)||^2.

    A 0-dim tensor in the inputs' dtype that autograd can follow: the training loss of both
    trainers. Reports pass float64 inputs (`float(fvu(x.double(), x_hat.double()))`);
    `RunningFvu` gives the same number over batches it does not keep. `total_var`: the
    batch's `total_variance`, when the caller has it already."""
    total_var = total_variance(x_ND) if total_var is None else total_var
    return (x_ND - x_hat_ND).pow(2).sum() / total_var


def dead_fraction(fire_counts_S: Tensor) -> float:
    """Share of latents that never fired."""
    return float((fire_counts_S == 0).double().mean())


def ce_loss_recovered(clean: float, spliced: float, ablated: float) -> float:
    """1 when splicing the SAE in costs nothing, 0 when it is as bad as zero-ablation."""
    if ablated == clean:
        return float("nan")
    return (ablated - spliced) / (ablated - clean)


@dataclass
class RunningFvu:
    """FVU accumulated over batches without keeping them: needs sums of x, x^2 and err^2."""

    sq_err: float = 0.0
    n: int = 0
    sum_x: Tensor | None = None
    sum_sq: float = 0.0
    fire_counts: Tensor | None = None
    l0_sum: float = 0.0
    extra: dict = field(default_factory=dict)

    def update(self, x_ND: Tensor, x_hat_ND: Tensor, acts_NS: Tensor) -> None:
        x = x_ND.double()
        self.sq_err += float((x - x_hat_ND.double()).pow(2).sum())
        self.sum_x = x.sum(0) if self.sum_x is None else self.sum_x + x.sum(0)
        self.sum_sq += float(x.pow(2).sum())
        self.n += x.shape[0]
        fired = (acts_NS != 0).sum(0)
        self.fire_counts = fired if self.fire_counts is None else self.fire_counts + fired
        self.l0_sum += float(fired.sum())

    def fvu(self) -> float:
        total = self.sum_sq - float(self.sum_x.pow(2).sum()) / self.n
        return self.sq_err / total

    def l0(self) -> float:
        return self.l0_sum / self.n

    def dead_fraction(self) -> float:
        return dead_fraction(self.fire_counts)


def cross_entropy(logits_BLV: Tensor, ids_BL: Tensor) -> float:
    """Mean next-token loss over positions 1.. (the first prediction is for position 1)."""
    logits = logits_BLV[:, :-1].float()
    return float(torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), ids_BL[:, 1:].reshape(-1)
    ))
