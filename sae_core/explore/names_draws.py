"""How many features a name detects, per layer and band of layers, with an interval: a
bootstrap over the held-out documents.

A feature's name and its rule stay as they were learnt (on the learn half); a draw weights
every document of the held-out half by how often it was drawn (sae_core/stats.py), so the
rule's held-out counts (firings it predicts, tokens it predicts, firings) are per-document
counts weighted and summed, and its F1 follows exactly as names_score computes it (all
weights 1 gives the stored scores). A layer's draws count its alive features whose F1 in
the draw reaches the bar; the draws are the layer map's (the same documents, `n_boot` and
seed), so the two products' intervals pair.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from ..activations import layer_of
from ..metrics import f1_from_counts
from ..stats import Interval, percentile_interval
from .names_evidence import Half
from .names_score import Evidence, firing_hits

if TYPE_CHECKING:
    from .names import FeatureNames

DETECTED_F1 = 0.5
"""A name detects its feature when its held-out F1 reaches this."""
DRAWS = "detected_B"
"""The field of a names layer that holds `detected_draws` (absent from older names)."""
LAYER_BANDS = ((0, 9), (10, 19), (20, 29))


def counts_by_document(key_N: Tensor, doc_N: Tensor, wanted_K: Tensor, n_docs: int
                       ) -> Tensor:
    """(K, n_docs) float32: how many tokens of each document have key `wanted_K[k]` (keys
    < 0 are wanted by nobody and count 0)."""
    keys = wanted_K[wanted_K >= 0].unique()
    out = torch.zeros(len(wanted_K), n_docs)  # cpu: host counts, exact below 2**24
    if len(keys) == 0 or len(key_N) == 0:
        return out
    at_N = torch.searchsorted(keys, key_N).clamp(max=len(keys) - 1)
    match = keys[at_N] == key_N
    table = torch.zeros(len(keys), n_docs)  # cpu: as above
    table.index_put_((at_N[match], doc_N[match]), torch.ones(int(match.sum())),
                     accumulate=True)
    rows = torch.searchsorted(keys, wanted_K.clamp(min=0)).clamp(max=len(keys) - 1)
    return torch.where((wanted_K >= 0)[:, None] & (keys[rows] == wanted_K)[:, None],
                       table[rows], 0.0)


def predicted_by_document(half: Half, doc_N: Tensor, ev: Evidence, rule_F: Tensor,
                          n_labels: list[int], n_docs: int) -> Tensor:
    """(F, n_docs): the tokens of each document that each feature's rule predicts (rule 1:
    one of its tokens; 2: its label; 3: either; 0: none)."""
    n_features, top = ev.tokens_F3.shape
    by_tokens = counts_by_document(half.tokens_N, doc_N, ev.tokens_F3.flatten(), n_docs)
    by_tokens = by_tokens.view(n_features, top, n_docs).sum(1)
    by_label = torch.zeros(n_features, n_docs)  # cpu: host counts
    both = torch.zeros(n_features, n_docs)  # cpu: host counts
    for t, n_lab in enumerate(n_labels):
        mine = (ev.task_F == t).nonzero().squeeze(1)
        if len(mine) == 0:
            continue
        lab_N, label = half.labels_TN[t], ev.label_F[mine]
        by_label[mine] = counts_by_document(lab_N, doc_N, label, n_docs)
        names_M3 = ev.tokens_F3[mine]
        joint = torch.where(names_M3 >= 0, names_M3 * n_lab + label[:, None], -1)
        joint_MG = counts_by_document(half.tokens_N * n_lab + lab_N, doc_N, joint.flatten(),
                                      n_docs)
        both[mine] = joint_MG.view(len(mine), top, n_docs).sum(1)
    options = torch.stack([torch.zeros_like(by_tokens), by_tokens, by_label,
                           by_tokens + by_label - both])
    return options[rule_F, torch.arange(n_features)]


def detected_draws(half: Half, doc_N: Tensor, ev: Evidence, rule_F: Tensor,
                   alive_F: Tensor, n_labels: list[int], w_BG: Tensor,
                   bar: float = DETECTED_F1) -> Tensor:
    """(B,) float32: how many alive features' names reach F1 `bar` on the held-out half
    `half` (its tokens' documents `doc_N`) in each document draw `w_BG`."""
    n_features, n_docs = len(rule_F), w_BG.shape[1]
    tok_hit, lab_hit = firing_hits(half, ev)
    rule_P = rule_F[half.feat_P]  # 1: tokens, 2: label, 3: either (names_score.RULES)
    by_tokens, by_label = (rule_P == 1) | (rule_P == 3), (rule_P == 2) | (rule_P == 3)
    hit_P = (by_tokens & tok_hit) | (by_label & lab_hit)
    doc_P = doc_N[half.row_P]
    fires_FG = torch.zeros(n_features, n_docs)  # cpu: host counts
    fires_FG.index_put_((half.feat_P, doc_P), torch.ones(len(doc_P)), accumulate=True)
    hits_FG = torch.zeros(n_features, n_docs)  # cpu: host counts
    hits_FG.index_put_((half.feat_P[hit_P], doc_P[hit_P]), torch.ones(int(hit_P.sum())),
                       accumulate=True)
    predicted_FG = predicted_by_document(half, doc_N, ev, rule_F, n_labels, n_docs)
    w_GB = w_BG.T.double()  # float64, as names_score: F1 at the bar compares the same
    f1_FB = f1_from_counts(hits_FG.double() @ w_GB, predicted_FG.double() @ w_GB,
                           fires_FG.double() @ w_GB)
    named_F = alive_F & (rule_F > 0)
    return ((f1_FB >= bar) & named_F[:, None]).sum(0).float()


class BandShare(NamedTuple):
    first: int
    last: int
    share: float
    """Share of the band's alive features whose name has held-out F1 >= the bar (NaN when
    the band has no alive feature)."""
    n_alive: int
    lo: float = float("nan")
    """The share's 95% interval over held-out documents (NaN: names without draws)."""
    hi: float = float("nan")


def detected_share(names: FeatureNames, hookpoints: list[str], bar: float = DETECTED_F1
                   ) -> tuple[Interval, int]:
    """The share of the alive features of `hookpoints` (pooled) whose name has held-out F1
    >= `bar`, with its interval when every layer kept its draws at the default bar; and how
    many features are alive."""
    good = alive = 0
    draws = []
    for h in hookpoints:
        lay = names.layers[h]
        alive_F = lay["support"] > 0
        alive += int(alive_F.sum())
        good += int((alive_F & (lay["scores"][:, 2] >= bar)).sum())
        draws += [lay[DRAWS]] if DRAWS in lay else []
    if not alive:
        return Interval(float("nan"), float("nan"), float("nan")), 0
    complete = bar == DETECTED_F1 and len(draws) == len(hookpoints)
    lo, hi = (percentile_interval(torch.stack(draws).double().sum(0) / alive) if complete
              else (float("nan"), float("nan")))
    return Interval(good / alive, lo, hi), alive


def share_detected(names: FeatureNames, min_f1: float = DETECTED_F1,
                   bands: tuple[tuple[int, int], ...] = LAYER_BANDS) -> list[BandShare]:
    """Per band of layers (first..last, inclusive): how many alive features have a name
    that detects them with held-out F1 >= `min_f1`."""
    out = []
    for first, last in bands:
        share, alive = detected_share(
            names, [h for h in names.hookpoints if first <= layer_of(h) <= last], min_f1)
        out.append(BandShare(first, last, share.point, alive, share.lo, share.hi))
    return out
