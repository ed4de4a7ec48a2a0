"""Pure functions for SAE quality: FVU, explained variance, L0, dead fraction, CE recovered
(against zero or mean ablation), KL to the clean model, the tokens an evaluation leaves out,
and the standard errors of per-window means and ratios."""

from __future__ import annotations

import math
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


def f1_from_counts(hits: Tensor, predicted: Tensor, actual: Tensor) -> Tensor:
    """F1 = 2 TP / (predicted + actual positives), elementwise; 0 where both are 0."""
    return 2 * hits / (predicted + actual).clamp(min=1)


def ce_loss_recovered(clean: float, spliced: float, ablated: float) -> float:
    """1 when splicing the SAE in costs nothing, 0 when it is as bad as the ablation
    (`ablated`: the loss with the activation zeroed, or replaced by its mean)."""
    if ablated == clean:
        return float("nan")
    return (ablated - spliced) / (ablated - clean)


def left_out(shape_WL: tuple[int, int], kept: int, outlier_factor: float) -> dict:
    """What an evaluation over `shape_WL` windows that kept `kept` tokens left out: position 0
    of every window, and the tokens whose norm exceeds outlier_factor x the layer's median
    (the rest). Keys of metrics.json."""
    n_windows, seq_len = shape_WL
    return {"left_out_first": n_windows,
            "left_out_outliers": n_windows * seq_len - n_windows - kept,
            "outlier_factor": outlier_factor}


@dataclass
class RunningFvu:
    """FVU accumulated over batches without keeping them: needs sums of x, x^2 and err^2.
    `x` is the target: what an SAE reconstructs, or the output site a transcoder predicts
    from its input (atlas/evaluate.py)."""

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

    def mean(self) -> Tensor:
        """The mean target over the rows seen (float32): what mean ablation puts in."""
        return (self.sum_x / self.n).float()

    def dead_fraction(self) -> float:
        return dead_fraction(self.fire_counts)


def cross_entropy(logits_BLV: Tensor, ids_BL: Tensor) -> float:
    """Mean next-token loss over positions 1.. (the first prediction is for position 1)."""
    logits = logits_BLV[:, :-1].float()
    return float(torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), ids_BL[:, 1:].reshape(-1)
    ))


def clean_dists(logits_BLV: Tensor) -> tuple[Tensor, Tensor]:
    """The clean run's next-token probabilities for positions 1.. (B, L-1, V) and their
    sum p log p (B, L-1): computed once, for every KL against the clean model."""
    probs, neg_entropy = [], []
    for row_LV in logits_BLV[:, :-1]:
        logp_LV = row_LV.float().log_softmax(-1)
        probs.append(logp_LV.exp())
        neg_entropy.append((probs[-1] * logp_LV).sum(-1))
    return torch.stack(probs), torch.stack(neg_entropy)


def window_losses(
    logits_BLV: Tensor, ids_BL: Tensor, clean: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Per window (row), float64 (B,): the mean next-token loss over positions 1.. (as
    `cross_entropy`) and, given the clean run's `clean_dists`, the mean per-token
    KL(clean || these logits) = sum p log p - sum p log q over the same predictions (else
    None). One row at a time: a batch of log-probabilities over a 49k vocabulary is 400 MB."""
    ce_B, kl_B = [], []
    for b in range(len(ids_BL)):
        logq_LV = logits_BLV[b, :-1].float().log_softmax(-1)
        ce_B.append(-logq_LV.gather(-1, ids_BL[b, 1:, None]).double().mean())
        if clean is not None:
            probs_LV, neg_entropy_L = clean[0][b], clean[1][b]
            kl_B.append((neg_entropy_L - (probs_LV * logq_LV).sum(-1)).double().mean())
    return torch.stack(ce_B), (torch.stack(kl_B) if kl_B else None)


def mean_and_se(values_W: Tensor) -> tuple[float, float]:
    """The mean over windows and its standard error, sd / sqrt(n) with the n-1 sample sd
    (windows, not tokens, are the independent draws); NaN error for a single window."""
    x = values_W.double()
    n = len(x)
    se = float(x.std(correction=1) / math.sqrt(n)) if n > 1 else math.nan
    return float(x.mean()), se


def ratio_and_se(num_W: Tensor, den_W: Tensor) -> tuple[float, float]:
    """R = sum(num) / sum(den) over windows and its delta-method standard error:

        SE(R) = sqrt(sum_w (num_w - R den_w)^2 / (n (n - 1))) / |mean(den)|

    (first-order Taylor expansion of mean(num) / mean(den) around the window means; the
    residuals num_w - R den_w have mean zero by construction). NaN when sum(den) is 0 and
    an error of NaN for a single window."""
    num, den = num_W.double(), den_W.double()
    n, total = len(num), float(den.sum())
    if total == 0:
        return math.nan, math.nan
    ratio = float(num.sum()) / total
    if n < 2:
        return ratio, math.nan
    resid = num - ratio * den
    return ratio, float(resid.pow(2).sum() / (n * (n - 1))) ** 0.5 / abs(total / n)


def format_with_error(value: float | None, se: float | None = None) -> str:
    """`value ± se` at the precision the error allows: the error rounded to its first
    significant digit, or two when that digit is 1, and the value to the same decimal place
    (0.8712, 0.0213 -> "0.87 ± 0.02"). Without a usable error (old metrics, one window):
    the value at 3 decimals; "n/a" without a finite value."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if se is None or not math.isfinite(se) or se < 0:
        return f"{value:.3f}"
    if se == 0:
        return f"{value:.3f} ± 0"
    mantissa, exp = f"{se:e}".split("e")  # decimal digits: 0.3 is "3.000000e-01"
    places = -int(exp) + (1 if mantissa[0] == "1" else 0)
    shown = max(places, 0)
    # + 0.0 turns a rounded -0.0 into 0.0
    return f"{round(value, places) + 0.0:.{shown}f} ± {round(se, places):.{shown}f}"
