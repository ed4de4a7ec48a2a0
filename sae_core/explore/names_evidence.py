"""The evidence a feature's name is built from (explore/names.py), all learnt on the learn
half of the labelled tokens and vectorised over a layer's features:

- its tokens: among the token ids it fires on far more often than their base rate (lift =
  P(token | fires) / P(token) >= 2), those with the most firings weighted by log lift, so
  a common word it merely prefers (" the", lift 2.7) does not outrank a rare one it is about
  (" edge", lift 198);
- its label: the layer map's rule (consistency.py) on the learn half, one task per feature;
- the output tokens it promotes: the logit lens (logit_lens.py) of its decoder row.

Firings come as pairs (token row n, feature f), one per valid TopK slot: a token fires a
feature at most once, so pair counts are firing counts.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..lm import LM
from ..metrics import f1_from_counts
from .consistency import accepted, base_rates, feature_stats, pair_counts
from .logit_lens import through_final_norm

TOP_TOKENS = 3
MIN_TOKEN_COUNT = 3
MIN_LIFT = 2.0
MIN_CONSISTENCY = 0.8
MIN_SUPPORT = 20
"""As the layer map's defaults: a label needs 80% of >= 20 firings and twice its base rate."""
LENS_CHUNK = 512
LENS_BLOCKS = 64
"""The logit lens reads the vocabulary as LENS_BLOCKS interleaved slices and keeps the top
few columns of their elementwise max: a cheap exact pre-filter of the top tokens."""


class LabelEvidence(NamedTuple):
    task_F: Tensor  # (F,) int64 index into the tasks, -1 when no label is consistent
    label_F: Tensor  # (F,) int64 label id within that task, -1 when none


class Evidence(NamedTuple):
    """A layer's names as ids: `token_evidence` and `label_evidence` together."""

    tokens_F3: Tensor  # (F, 3) int64 token ids, -1 padded
    task_F: Tensor  # (F,) int64 task index, -1: no label
    label_F: Tensor  # (F,) int64 label id within the task


class Half(NamedTuple):
    """One half of the labelled tokens (learn or held-out) of a layer, and every valid
    firing on it as a (feature, token) pair."""

    feat_P: Tensor  # int64 feature
    token_P: Tensor  # int32 token id
    labels_TP: Tensor  # (tasks, P) int64 label ids of the token
    tokens_N: Tensor  # int64 token ids of the half's tokens
    labels_TN: Tensor  # (tasks, N) int64 their label ids
    row_P: Tensor  # int64 the firing's token: a row of tokens_N


def half_of(idx_NK: Tensor, valid_NK: Tensor, tokens_N: Tensor, labels_TN: Tensor,
            rows_N: Tensor) -> Half:
    """The half of the tokens where `rows_N` (bool) is True."""
    tokens_N, labels_TN = tokens_N[rows_N], labels_TN[:, rows_N]
    tok_P, slot_P = valid_NK[rows_N].nonzero(as_tuple=True)
    feat_P = idx_NK[rows_N][tok_P, slot_P].long()
    return Half(feat_P, tokens_N[tok_P].int(), labels_TN[:, tok_P], tokens_N, labels_TN, tok_P)


def top_per_group(group_P: Tensor, value_P: Tensor, n_groups: int, top: int,
                  order_P: Tensor) -> Tensor:
    """(n_groups, top) `value_P` of each group's first `top` entries in the order of
    `order_P` descending (ties: smaller value first), -1 where a group has fewer."""
    out = torch.full((n_groups, top), -1, dtype=torch.long)  # cpu: firings are on the CPU
    if len(group_P) == 0:
        return out
    o = value_P.argsort(stable=True)
    o = o[order_P[o].argsort(descending=True, stable=True)]
    o = o[group_P[o].argsort(stable=True)]
    g = group_P[o]
    # position within its group
    rank = torch.arange(len(g)) - torch.searchsorted(g, g)  # cpu: firings are on the CPU
    keep = rank < top
    out[g[keep], rank[keep]] = value_P[o][keep]
    return out


def token_evidence(learn: Half, n_features: int, *, top: int = TOP_TOKENS) -> Tensor:
    """(F, top) token ids of each feature, highest firings x ln(lift) first, -1 padded:
    tokens with >= MIN_TOKEN_COUNT firings and lift >= MIN_LIFT on the learn half."""
    tokens_N = learn.tokens_N
    n_vocab = int(tokens_N.max()) + 1 if len(tokens_N) else 1
    key = learn.feat_P * n_vocab + learn.token_P
    if n_features * n_vocab < 2**31:
        key = key.int()  # sorts ~1.5x faster
    key, count = torch.unique(key, return_counts=True)
    key = key.long()
    feat, tok = key // n_vocab, key % n_vocab
    support_F = torch.bincount(learn.feat_P, minlength=n_features).double()
    share_V = torch.bincount(tokens_N, minlength=n_vocab).double() / max(len(tokens_N), 1)
    lift = (count / support_F[feat]) / share_V[tok]
    ok = (count >= MIN_TOKEN_COUNT) & (lift >= MIN_LIFT)
    weight = count[ok] * lift[ok].log()
    return top_per_group(feat[ok], tok[ok], n_features, top, weight)


def label_evidence(learn: Half, n_labels: list[int], n_features: int) -> LabelEvidence:
    """Each feature's consistent label (consistency.accepted at the layer map's defaults)
    on the learn half; where several tasks have one, the label that detects its firings
    best (F1 of "the token has the label" for "the feature fires")."""
    labels_TN = learn.labels_TN
    best_F1 = torch.full((n_features,), -1.0, dtype=torch.float64)  # cpu: from firings
    task_F = torch.full((n_features,), -1, dtype=torch.long)  # cpu: from firings
    label_F = torch.full((n_features,), -1, dtype=torch.long)  # cpu: from firings
    for t, n_lab in enumerate(n_labels):
        counts_FL = pair_counts(learn.feat_P, learn.labels_TP[t], n_features, n_lab)
        stats = feature_stats(counts_FL, base_rates(labels_TN[t], n_lab))
        ok = accepted(stats, MIN_CONSISTENCY, MIN_SUPPORT, MIN_LIFT)
        label = stats.label.clamp(min=0)
        has_label = torch.bincount(labels_TN[t], minlength=n_lab)[label]
        tp = counts_FL.gather(1, label[:, None])[:, 0]
        f1 = f1_from_counts(tp, has_label, stats.support)
        better = ok & (f1 > best_F1)
        best_F1 = torch.where(better, f1.double(), best_F1)
        task_F = torch.where(better, t, task_F)
        label_F = torch.where(better, stats.label, label_F)
    return LabelEvidence(task_F, label_F)


@torch.inference_mode()
def unembedding(lm: LM) -> Tensor:
    """(V, D) bf16 unembedding rows of the tokenizer's tokens (rows past it pad the matrix),
    for `promoted_tokens`: converted once for every layer."""
    return lm.model.get_output_embeddings().weight.detach()[:len(lm.tokenizer)].bfloat16()


@torch.inference_mode()
def promoted_tokens(lm: LM, w_dec_FD: Tensor, alive_F: Tensor, w_VD: Tensor | None = None,
                    *, top: int = TOP_TOKENS, chunk: int = LENS_CHUNK) -> Tensor:
    """(F, top) the output tokens each alive feature's decoder row promotes most through
    the final norm and unembedding `w_VD` (default: `unembedding(lm)`), as
    logit_lens.direction_logits scores them; -1 for the others.

    Scores are bf16 (the ranking of near-equal logits may differ from fp32's): the fp32
    product over 30 layers x 4,608 features x 49,152 tokens takes minutes on 2 CPU cores."""
    w_VD = unembedding(lm) if w_VD is None else w_VD
    pad = -len(w_VD) % LENS_BLOCKS
    out = torch.full((len(w_dec_FD), top), -1, dtype=torch.long)  # cpu: stored with names
    ids = alive_F.nonzero().squeeze(1)
    normed_AD = through_final_norm(lm, w_dec_FD[ids.to(w_dec_FD.device)].float()).bfloat16()
    for start in range(0, len(ids), chunk):
        rows = ids[start:start + chunk]
        logits_CV = F.linear(normed_AD[start:start + chunk], w_VD)
        if pad:  # a copy of the scores: only for a vocabulary that does not split evenly
            logits_CV = F.pad(logits_CV, (0, pad), value=-torch.inf)
        out[rows] = _top_ids(logits_CV, top).cpu()
    return out


def _top_ids(logits_CV: Tensor, top: int) -> Tensor:
    """(C, top) ids of each row's largest entries: the top `top` tokens lie in the `top`
    slices (columns of a (LENS_BLOCKS, V / LENS_BLOCKS) view) whose maxima are largest."""
    C, V = logits_CV.shape
    width = V // LENS_BLOCKS
    col_max = logits_CV.view(C, LENS_BLOCKS, width).amax(1)  # (C, width)
    cols = col_max.topk(min(top, width), dim=1).indices  # (C, top)
    cand = (cols[:, :, None] + width * torch.arange(LENS_BLOCKS, device=cols.device)
            ).reshape(C, -1)
    best = logits_CV.gather(1, cand).float().topk(min(top, cand.shape[1]), dim=1).indices
    return cand.gather(1, best)
