"""Per-feature label and consistency, and the layer map (method: seeds/000).

A feature's label is the most common label among the tokens where it fires; its
consistency is the share of its firings that carry that label. Counts are exact integers
and add over token batches, so callers can stream the corpus and sum.

Conventions, for features and labels with no data:
- a feature that never fires has label -1, consistency NaN and lift NaN, so it is never
  accepted and a mean over features must skip it knowingly (`torch.nanmean`);
- ties in the top count go to the lowest label id;
- a label absent from the corpus has base rate 0; it can only be a feature's label if the
  counts and the base rate come from different tokens, and then its lift is +inf.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray


class FeatureStats(NamedTuple):
    label: Tensor  # (n_features,) int64 argmax label id, lowest id on ties, -1 if never fires
    consistency: Tensor  # (n_features,) float64 top count / support, NaN if never fires
    support: Tensor  # (n_features,) int64 number of firings
    lift: Tensor  # (n_features,) float64 consistency / base rate of the label


class LayerMap(NamedTuple):
    n_accepted: Tensor  # (n_labels,) int64 accepted features per label
    share_accepted: float  # accepted features / all features (dead ones included)
    n_eligible: int  # features with support >= min_support


def _long(x: ArrayLike) -> Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).long()


def pair_counts(feat_P: Tensor, lab_P: Tensor, n_features: int, n_labels: int) -> Tensor:
    """(n_features, n_labels) counts of (feature, label) pairs, exact in int64."""
    if len(feat_P) and (int(feat_P.min()) < 0 or int(feat_P.max()) >= n_features):
        raise ValueError(f"feature ids must be in 0..{n_features - 1}")
    if len(lab_P) and (int(lab_P.min()) < 0 or int(lab_P.max()) >= n_labels):
        raise ValueError(f"label ids must be in 0..{n_labels - 1}")
    flat = torch.bincount(feat_P * n_labels + lab_P, minlength=n_features * n_labels)
    return flat.view(n_features, n_labels)


def label_counts(
    fire_idx_NK: ArrayLike, labels_N: ArrayLike, n_features: int, n_labels: int, *,
    valid_NK: ArrayLike | None = None,
) -> Tensor:
    """(n_features, n_labels) firing counts from TopK indices: token n fires its k features.

    `valid_NK` (optional bool) drops slots that did not really fire, e.g. TopK latents
    whose activation is 0 after the ReLU.
    """
    idx_NK, lab_N = _long(fire_idx_NK), _long(labels_N)
    if idx_NK.ndim != 2 or lab_N.shape != idx_NK.shape[:1]:
        raise ValueError(f"expected (N, k) indices and (N,) labels, got {idx_NK.shape}, "
                         f"{lab_N.shape}")
    lab_NK = lab_N[:, None].expand_as(idx_NK)
    if valid_NK is not None:
        keep = torch.as_tensor(np.asarray(valid_NK) if not isinstance(valid_NK, Tensor)
                               else valid_NK).bool()
        return pair_counts(idx_NK[keep], lab_NK[keep], n_features, n_labels)
    return pair_counts(idx_NK.reshape(-1), lab_NK.reshape(-1), n_features, n_labels)


def label_counts_dense(fires_NF: ArrayLike, labels_N: ArrayLike, n_labels: int) -> Tensor:
    """(n_features, n_labels) firing counts from a dense (N, F) bool firing mask."""
    fires = torch.as_tensor(fires_NF).bool()
    lab_N = _long(labels_N)
    if fires.ndim != 2 or lab_N.shape != fires.shape[:1]:
        raise ValueError(f"expected (N, F) mask and (N,) labels, got {fires.shape}, "
                         f"{lab_N.shape}")
    tok_P, feat_P = fires.nonzero(as_tuple=True)  # memory ~ firings, not N * F
    return pair_counts(feat_P, lab_N[tok_P], fires.shape[1], n_labels)


def base_rates(labels_N: ArrayLike, n_labels: int) -> Tensor:
    """(n_labels,) float64 share of tokens carrying each label (0 for absent labels)."""
    lab_N = _long(labels_N).reshape(-1)
    counts = torch.bincount(lab_N, minlength=n_labels).double()
    return counts / max(len(lab_N), 1)


def feature_stats(counts_FL: ArrayLike, base_rate_L: ArrayLike) -> FeatureStats:
    """Label (argmax, lowest id on ties), consistency, support and lift per feature."""
    counts = torch.as_tensor(counts_FL).long()
    base = torch.as_tensor(base_rate_L).double()
    support = counts.sum(dim=1)
    top = counts.max(dim=1).values
    # torch.max does not promise which index wins a tie; argmax over the "equals the top"
    # mask returns the first True, i.e. the lowest label id.
    label = (counts == top[:, None]).int().argmax(dim=1)
    alive = support > 0
    label = torch.where(alive, label, torch.full_like(label, -1))
    consistency = torch.where(alive, top.double() / support.clamp(min=1), torch.nan)
    rate = base[label.clamp(min=0)]
    # x / 0 = +inf for x > 0 (label absent from the base-rate tokens); dead features -> NaN.
    lift = torch.where(alive, consistency / rate, torch.nan)
    return FeatureStats(label=label, consistency=consistency, support=support, lift=lift)


def accepted(stats: FeatureStats, threshold: float, min_support: int,
             min_lift: float = 0.0) -> Tensor:
    """(n_features,) bool: consistency >= threshold, support >= min_support (at least 1, so a
    dead feature is never accepted) and lift >= min_lift (with min_lift > 1, a label as
    common as "no entity" is not earned by chance). NaN compares False."""
    ok = stats.support >= max(int(min_support), 1)
    return ok & (stats.consistency >= threshold) & (stats.lift >= min_lift)


def layer_map(
    stats: FeatureStats, threshold: float, min_support: int, n_labels: int, min_lift: float = 0.0
) -> LayerMap:
    """Accepted features per label (see `accepted`)."""
    eligible = stats.support >= max(min_support, 1)
    accepted_F = accepted(stats, threshold, min_support, min_lift)
    n_accepted = torch.bincount(stats.label[accepted_F], minlength=n_labels)
    n_features = len(stats.support)
    share = float(accepted_F.sum()) / n_features if n_features else 0.0
    return LayerMap(n_accepted=n_accepted, share_accepted=share, n_eligible=int(eligible.sum()))


def random_directions(d: int, n: int, seed: int = 0) -> Tensor:
    """(n, d) float32 unit vectors, uniform on the sphere, reproducible from `seed`."""
    gen = torch.Generator().manual_seed(seed)
    dirs_ND = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return (dirs_ND / dirs_ND.norm(dim=1, keepdim=True)).float()


def topq_tokens(acts_NF: Tensor, rate: float) -> Tensor:
    """(F, m) indices of each column's top m = round(rate * N) tokens: its firings.

    The control for the SAE: use its mean firing rate (k / d_sae for TopK) on the raw
    residual dims or on random directions. Ties between equal values are cut arbitrarily
    so every column fires the same number of times. Only the positive tail is used; pass
    `torch.cat([acts, -acts], 1)` to give each direction a feature per sign."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    m = round(rate * acts_NF.shape[0])
    # topk along the contiguous last dim is much faster than along dim 0
    return acts_NF.T.contiguous().topk(m, dim=1, sorted=False).indices


def label_counts_topq(top_FM: Tensor, labels_N: ArrayLike, n_labels: int) -> Tensor:
    """(F, n_labels) counts of the labels of each feature's firing tokens."""
    n_features = top_FM.shape[0]
    lab_FM = _long(labels_N)[top_FM]
    feat_FM = torch.arange(n_features).unsqueeze(1).expand_as(top_FM)
    return pair_counts(feat_FM.reshape(-1), lab_FM.reshape(-1), n_features, n_labels)
