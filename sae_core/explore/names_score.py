"""How well a feature's name detects its firings (explore/names.py).

A name predicts "the feature fires" on a token by one of three rules: the token's id is one
of the name's tokens (`tokens`), the token has the name's label (`label`), or either. Each
feature's rule is the one with the best F1 on the learn half; its precision, recall and F1
on the held-out half are the name's score. Everything is counted at once for a layer's
features: firings as (token row, feature) pairs, tokens per id, tokens per (id, label).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..metrics import f1_from_counts
from .names_evidence import Half

RULES = ("", "tokens", "label", "either")
"""Rule ids as stored: 0 = no rule (a dead or unnamed feature)."""


class Evidence(NamedTuple):
    """A layer's names as ids (names_evidence.py)."""

    tokens_F3: Tensor  # (F, 3) int64 token ids, -1 padded
    task_F: Tensor  # (F,) int64 task index, -1: no label
    label_F: Tensor  # (F,) int64 label id within the task


class RuleCounts(NamedTuple):
    """On one half, per feature and rule (tokens, label, either): (F, 3) float64."""

    hits: Tensor  # firings on tokens the rule predicts
    predicted: Tensor  # tokens the rule predicts
    fires: Tensor  # (F,) tokens the feature fires on


class Score(NamedTuple):
    rule_F: Tensor  # (F,) int64 index into RULES
    precision_F: Tensor  # (F,) float32, held-out
    recall_F: Tensor
    f1_F: Tensor


def name_scores(learn: Half, heldout: Half, n_labels: list[int], ev: Evidence) -> Score:
    """Each feature's rule, chosen on the learn half, and its held-out score (module doc)."""
    return _choose_and_score(_rule_counts(learn, n_labels, ev),
                             _rule_counts(heldout, n_labels, ev), ev)


def firing_hits(half: Half, ev: Evidence) -> tuple[Tensor, Tensor]:
    """(P,) bool each: the firing's token is one of its feature's name tokens; it has the
    feature's label."""
    feat_P = half.feat_P
    names_F3 = ev.tokens_F3.int()
    tok_hit = half.token_P == names_F3[feat_P, 0]
    for j in range(1, names_F3.shape[1]):
        tok_hit |= half.token_P == names_F3[feat_P, j]
    task_P = ev.task_F[feat_P]
    lab_hit = (task_P >= 0) & (half.labels_TP.gather(0, task_P.clamp(min=0)[None])[0]
                               == ev.label_F[feat_P])
    return tok_hit, lab_hit


def _rule_counts(half: Half, n_labels: list[int], ev: Evidence) -> RuleCounts:
    """The three rules' counts on one half: firings they predict, tokens they predict."""
    n_features = len(ev.tokens_F3)
    feat_P = half.feat_P
    tok_hit, lab_hit = firing_hits(half, ev)

    def per_feature(hit_P: Tensor) -> Tensor:
        return torch.bincount(feat_P[hit_P], minlength=n_features).double()

    hits = torch.stack([per_feature(tok_hit), per_feature(lab_hit),
                        per_feature(tok_hit | lab_hit)], 1)
    tokens_N, labels_TN = half.tokens_N, half.labels_TN
    n_vocab = max(int(tokens_N.max()) if len(tokens_N) else 0, int(ev.tokens_F3.max())) + 1
    per_id = torch.bincount(tokens_N, minlength=n_vocab).double()
    named = ev.tokens_F3 >= 0
    by_tokens = (per_id[ev.tokens_F3.clamp(min=0)] * named).sum(1)
    by_label = torch.zeros(n_features, dtype=torch.float64)
    both = torch.zeros(n_features, dtype=torch.float64)
    for t, n_lab in enumerate(n_labels):
        mine = (ev.task_F == t).nonzero().squeeze(1)
        if len(mine) == 0:
            continue
        lab_N, label = labels_TN[t], ev.label_F[mine]
        by_label[mine] = torch.bincount(lab_N, minlength=n_lab).double()[label]
        joint_VL = torch.bincount(tokens_N * n_lab + lab_N, minlength=n_vocab * n_lab)
        joint = joint_VL.view(n_vocab, n_lab).double()[ev.tokens_F3[mine].clamp(min=0),
                                                        label[:, None]]
        both[mine] = (joint * named[mine]).sum(1)
    predicted = torch.stack([by_tokens, by_label, by_tokens + by_label - both], 1)
    fires = torch.bincount(feat_P, minlength=n_features).double()
    return RuleCounts(hits, predicted, fires)


def _choose_and_score(learn: RuleCounts, heldout: RuleCounts, ev: Evidence) -> Score:
    """Each feature's rule (best learn-half F1 among those its name allows; ties: tokens,
    then label) and that rule's held-out precision, recall and F1 (0 without a rule)."""
    has_tokens, has_label = ev.tokens_F3[:, 0] >= 0, ev.task_F >= 0
    allowed = torch.stack([has_tokens, has_label, has_tokens & has_label], 1)
    f1_learn = torch.where(
        allowed, f1_from_counts(learn.hits, learn.predicted, learn.fires[:, None]), -1.0)
    pick = f1_learn.argmax(1)
    named = allowed.any(1)
    rule_F = torch.where(named, pick + 1, 0)
    hits = heldout.hits.gather(1, pick[:, None])[:, 0] * named
    predicted = heldout.predicted.gather(1, pick[:, None])[:, 0] * named
    precision = hits / predicted.clamp(min=1)
    recall = hits / heldout.fires.clamp(min=1)
    f1 = f1_from_counts(hits, predicted, heldout.fires)
    return Score(rule_F, precision.float(), recall.float(), f1.float())
