"""Intervals of the probing scores: a bootstrap over the held-out documents.

The probes stay as they were fitted (on the learn half); a draw weights every document of
the held-out half by how often it was drawn (sae_core/stats.py), so a label's confusion
counts in the draw are its per-document counts weighted and summed, and its F1 and balanced
accuracy follow from them exactly as probing_fit.f1_scores and balanced_accuracy compute
them (all weights 1 gives the scores themselves). A layer's value in a draw is the mean over
a task's labels; every layer and method takes the same draws, so a mean over layers or a
difference of methods (SAE less neurons, real model less random model, when both probed the
same documents) has its interval from the same draws. AUROC has no interval (it is not a
sum over documents).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..stats import percentile_interval

PROBE_BOOT = 200
"""Document draws per interval (as the layer map's MAP_BOOT)."""
LEVEL = 0.95
METRICS = ("f1", "bacc")
"""The scores with intervals: each is a function of a label's confusion counts."""


def confusion_by_document(z_LN: Tensor, y_LN: Tensor, doc_N: Tensor, n_docs: int) -> Tensor:
    """(4, L, n_docs) float64: true positives, false positives, false negatives and true
    negatives of each label's probe (positive where the logit is > 0) in each document."""
    pred, pos = z_LN > 0, y_LN > 0
    cells = torch.stack([pred & pos, pred & ~pos, ~pred & pos, ~pred & ~pos]).double()
    out = torch.zeros(4, z_LN.shape[0], n_docs, dtype=torch.float64)  # cpu: host counts
    return out.index_add_(2, doc_N.long(), cells)


def scores_from_counts(counts_4L: Tensor, metric: str) -> Tensor:
    """F1 or balanced accuracy from confusion counts (4, L, ...) -> (L, ...), as
    probing_fit computes them (a class with no token counts as 0.5 in balanced accuracy)."""
    tp, fp, fn, tn = counts_4L
    if metric == "f1":
        return 2 * tp / (2 * tp + fp + fn).clamp(min=1)
    if metric != "bacc":
        raise ValueError(f"no interval for {metric!r}: one of {METRICS}")
    tpr = torch.where(tp + fn > 0, tp / (tp + fn).clamp(min=1), 0.5)
    tnr = torch.where(tn + fp > 0, tn / (tn + fp).clamp(min=1), 0.5)
    return (tpr + tnr) / 2


def label_draws(counts_4LG: Tensor, w_BG: Tensor, metric: str) -> Tensor:
    """(L, B) each label's score in each document draw `w_BG` (stats.group_weights)."""
    return scores_from_counts(counts_4LG @ w_BG.T.double(), metric)


def task_mean_draws(z: dict[str, Tensor], y_LN: Tensor, doc_N: Tensor, w_BG: Tensor,
                    rows: dict[str, slice]) -> dict[str, Tensor]:
    """f"{method}/{metric}/{task}" -> (B,) float32: the mean over the task's labels (`rows`
    of the stacked problems) of each method's held-out score, per document draw."""
    out = {}
    for method, z_LN in z.items():
        counts = confusion_by_document(z_LN, y_LN, doc_N, w_BG.shape[1])
        for metric in METRICS:
            per_label = label_draws(counts, w_BG, metric)
            out |= {f"{method}/{metric}/{task}": per_label[r].mean(0).float()
                    for task, r in rows.items() if r.stop > r.start}
    return out


def stack_layers(per_layer: list[dict[str, Tensor]], n_boot: int) -> dict[str, Tensor]:
    """(n_layers, B) per key, NaN for a layer without that task's labels."""
    keys = sorted({k for d in per_layer for k in d})
    nan = torch.full((n_boot,), float("nan"))  # cpu: host draws
    return {k: torch.stack([d.get(k, nan) for d in per_layer]) for k in keys}


def mean_over_tasks(draws: dict[str, Tensor], method: str, metric: str,
                    tasks: list[str] | None) -> Tensor | None:
    """(n_layers, B): the mean of the tasks' means per draw (tasks None: every task with
    draws), as ProbingResult.per_layer averages them; None when none has draws."""
    prefix = f"{method}/{metric}/"
    rows = [d for k, d in draws.items() if k.startswith(prefix)
            and (tasks is None or k[len(prefix):] in tasks)]
    return torch.stack(rows).nanmean(0) if rows else None


def layer_bands(draws_LB: Tensor, level: float = LEVEL
                ) -> list[tuple[float, float] | tuple[None, None]]:
    """Per layer the `level` percentile interval of its draws ((None, None): no draw
    defined, a layer without labels)."""
    out = []
    for d_B in draws_LB:
        lo, hi = percentile_interval(d_B, level)
        out.append((None, None) if lo != lo else (lo, hi))
    return out
