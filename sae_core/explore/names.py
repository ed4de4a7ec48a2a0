"""A name for every feature, from evidence, with a score of how well it detects the feature.

A name reads like `' the' ' a' · DET → ' cat'`: the tokens the feature fires on far more
often than their base rate, its consistent label, and after the arrow the output tokens its
decoder row promotes (names_evidence.py). A feature with neither tokens nor label is
"unnamed", one that never fired on the labelled tokens "dead". Evidence is learnt on the
learn half of the labelled tokens. Names are computed once per atlas (`compute_names`),
stored next to the layer map keyed by the SAE fingerprint, and read with `read_names` (None
when missing or stale).

The score (`name_scores`): a name predicts "the feature fires" on a token by one of three
rules: the token's id is one of the name's tokens (`tokens`), the token has the name's label
(`label`), or either. Each feature's rule is the one with the best F1 on the learn half; its
precision, recall and F1 on the held-out half are the name's score. Everything is counted at
once for a layer's features: firings as (token row, feature) pairs, tokens per id, tokens
per (id, label).

How many features a name detects, per layer and band of layers, has an interval: a bootstrap
over the held-out documents (`detected_draws`). A feature's name and rule stay as they were
learnt; a draw weights every document of the held-out half by how often it was drawn
(sae_core/stats.py), so the rule's held-out counts (firings it predicts, tokens it predicts,
firings) are per-document counts weighted and summed, and its F1 follows exactly as the
score computes it (all weights 1 gives the stored scores). A layer's draws count its alive
features whose F1 in the draw reaches the bar; the draws are the layer map's (the same
documents, `n_boot` and seed), so the two products' intervals pair.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from ..activations import layer_of
from ..atlas.layout import NAMES_FILE, read_derived
from ..atomic import CorruptFile, load_tensors, read_json, save_tensors, write_json
from ..lm import LM
from ..metrics import f1_from_counts
from ..sae import Sae
from ..stats import Interval, group_weights, percentile_interval
from .firings import MAP_TASKS, LayerFirings, n_documents
from .layermap import MAP_BOOT
from .names_evidence import (
    Evidence,
    Half,
    half_of,
    label_evidence,
    promoted_tokens,
    token_evidence,
    unembedding,
)

log = logging.getLogger(__name__)
LOW_SCORE = 0.3
"""A name with held-out F1 below this is a weak fit (the app marks it "?")."""
FIELDS = ("tokens", "task", "label", "promotes", "rule", "scores", "support")
RULES = ("", "tokens", "label", "either")
"""Rule ids as stored: 0 = no rule (a dead or unnamed feature)."""
DETECTED_F1 = 0.5
"""A name detects its feature when its held-out F1 reaches this."""
DRAWS = "detected_B"
"""The field of a names layer that holds `detected_draws` (absent from older names)."""
LAYER_BANDS = ((0, 9), (10, 19), (20, 29))


@dataclass(frozen=True)
class FeatureName:
    text: str
    precision: float
    """Held-out: share of the tokens the name predicts on which the feature fires."""
    recall: float
    """Held-out: share of the feature's firings that the name predicts."""
    f1: float
    rule: str
    """How the name predicts a firing: "tokens", "label", "either"; "" when unnamed/dead."""
    support: int
    """Firings on all labelled tokens."""

    @property
    def weak(self) -> bool:
        """A name that detects its feature poorly (F1 < LOW_SCORE)."""
        return bool(self.rule) and self.f1 < LOW_SCORE

    def short(self) -> str:
        """"name (F1 0.62)", "name ? (F1 0.12)" for a weak fit, or "unnamed" / "dead"."""
        if not self.rule:
            return self.text
        return f"{self.text}{' ?' if self.weak else ''} (F1 {self.f1:.2f})"

    def explain(self) -> str:
        """One sentence on what the score means, for a tooltip."""
        if not self.rule:
            return "no token or label stands out where this feature fires"
        what = {"tokens": "the token is one of the name's tokens",
                "label": "the token has the name's label",
                "either": "the token is one of the name's tokens or has its label"}[self.rule]
        weak = " (a weak fit)" if self.weak else ""
        return (f"Predicting 'fires' when {what}: on held-out tokens, precision "
                f"{self.precision:.2f}, recall {self.recall:.2f}, F1 {self.f1:.2f}{weak}.")


class NameMatch(NamedTuple):
    hookpoint: str
    feature: int
    name: FeatureName


@dataclass
class FeatureNames:
    hookpoints: list[str]
    tasks: list[str]
    vocab: dict[str, list[str]]
    """task -> label names."""
    strings: dict[int, str]
    """Token id -> decoded text, for every id a name uses."""
    layers: dict[str, dict[str, Tensor]]
    """hookpoint -> FIELDS: tokens (F, 3) and promotes (F, 3) ids (-1 padded), task and
    label (F,) (-1: none), rule (F,) into RULES, scores (F, 3) held-out
    precision, recall, F1, support (F,) firings."""
    n_tokens: tuple[int, int] = (0, 0)
    """(learn, held-out) labelled tokens of the first layer."""
    sae_fingerprint: str = ""
    _texts: dict[str, list[str]] = field(default_factory=dict, repr=False)
    _lower: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def name(self, hookpoint: str, feature: int) -> FeatureName:
        """KeyError for an unknown hookpoint, IndexError for a feature out of range."""
        lay = self.layers[hookpoint]
        if not 0 <= feature < len(lay["rule"]):
            raise IndexError(f"{hookpoint} has no feature {feature}")
        p, r, f1 = lay["scores"][feature].tolist()
        return FeatureName(self.texts(hookpoint)[feature], p, r, f1,
                           RULES[int(lay["rule"][feature])], int(lay["support"][feature]))

    def texts(self, hookpoint: str) -> list[str]:
        """Every feature's name text at `hookpoint` (formatted once)."""
        if hookpoint not in self._texts:
            lay = self.layers[hookpoint]
            self._texts[hookpoint] = [
                self._format(tok, task, lab, prom, sup)
                for tok, task, lab, prom, sup in zip(
                    lay["tokens"].tolist(), lay["task"].tolist(), lay["label"].tolist(),
                    lay["promotes"].tolist(), lay["support"].tolist(), strict=True)]
        return self._texts[hookpoint]

    def _format(self, tokens: list[int], task: int, label: int, promotes: list[int],
                support: int) -> str:
        if support == 0:
            return "dead"
        parts = [" ".join(self._quoted(t) for t in tokens if t >= 0)]
        parts.append(self.vocab[self.tasks[task]][label] if task >= 0 else "")
        fires = " · ".join(p for p in parts if p)
        if not fires:
            return "unnamed"
        pushed = " ".join(self._quoted(t) for t in promotes if t >= 0)
        return f"{fires} → {pushed}" if pushed else fires

    def _quoted(self, token_id: int) -> str:
        text = self.strings.get(token_id, f"#{token_id}")
        return "'" + text.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r") + "'"

    def search(self, query: str, limit: int = 50) -> list[NameMatch]:
        """Named features whose name contains `query` (case-insensitive), those with a token
        or label equal to it first, then by held-out F1, then by firings."""
        q = query.strip().lower()
        if not q:
            return []
        found = []
        for h in self.hookpoints:
            lay = self.layers[h]
            rule, f1, support = (lay["rule"].tolist(), lay["scores"][:, 2].tolist(),
                                 lay["support"].tolist())
            tokens, task, label = lay["tokens"].tolist(), lay["task"].tolist(), \
                lay["label"].tolist()
            if h not in self._lower:
                self._lower[h] = [t.lower() for t in self.texts(h)]
            for f, text in enumerate(self._lower[h]):
                if rule[f] and q in text:
                    exact = q in self._pieces(tokens[f], task[f], label[f])
                    found.append((not exact, -f1[f], -support[f], h, f))
        found.sort(key=lambda x: x[:3])  # stable: layer and feature order on ties
        return [NameMatch(h, f, self.name(h, f)) for *_, h, f in found[:limit]]

    def _pieces(self, tokens: list[int], task: int, label: int) -> set[str]:
        """A name's tokens (stripped) and label, lower-case."""
        out = {self.strings.get(t, "").strip().lower() for t in tokens if t >= 0}
        if task >= 0:
            out.add(self.vocab[self.tasks[task]][label].lower())
        return out - {""}

    def save(self, path: Path) -> None:
        """The numbers, then the .json (the marker of whole names), each atomically."""
        path.with_suffix(".json").unlink(missing_ok=True)
        save_tensors(path, {f"{h}/{k}": v for h, lay in self.layers.items()
                            for k, v in lay.items()})
        meta = {"hookpoints": self.hookpoints, "tasks": self.tasks, "vocab": self.vocab,
                "strings": [[i, s] for i, s in sorted(self.strings.items())],
                "n_tokens": list(self.n_tokens), "sae_fingerprint": self.sae_fingerprint}
        write_json(path.with_suffix(".json"), meta, indent=None)

    @classmethod
    def load(cls, path: Path) -> FeatureNames:
        """CorruptFile when either file is truncated or damaged."""
        meta = read_json(path.with_suffix(".json"))
        tensors = load_tensors(path)
        layers = {h: {k: tensors[f"{h}/{k}"] for k in (*FIELDS, DRAWS)
                      if k in FIELDS or f"{h}/{k}" in tensors} for h in meta["hookpoints"]}
        return cls(meta["hookpoints"], meta["tasks"], meta["vocab"],
                   {int(i): s for i, s in meta["strings"]}, layers,
                   tuple(meta["n_tokens"]), meta["sae_fingerprint"])


def label_of(names: FeatureNames | None, hookpoint: str, feature: int) -> str:
    """A feature's name with its F1 ("' the' · DET (F1 0.62)", a weak fit marked "?"), or
    "" without names for the hookpoint or feature."""
    if names is None or hookpoint not in names.layers:
        return ""
    try:
        return names.name(hookpoint, feature).short()
    except IndexError:
        return ""


def read_names(folder: Path | str | None, fingerprint: str | None = None
                ) -> FeatureNames | None:
    """The current names of an atlas folder, or None (atlas/layout.read_derived)."""
    return read_derived(folder, NAMES_FILE, FeatureNames.load, fingerprint)


def readable_names(folder: Path | str | None, fingerprint: str | None = None
                   ) -> FeatureNames | None:
    """The current names, or None when missing, stale or unreadable (logged): every view
    then shows feature ids alone."""
    try:
        return read_names(folder, fingerprint)
    except (CorruptFile, OSError, ValueError, KeyError) as err:
        log.warning("feature names of %s unreadable: %s", folder, err)
        return None


def compute_names(lm: LM, saes: dict[str, Sae], firings: dict[str, LayerFirings],
                  vocab: dict[str, list[str]], *, fingerprint: str = "") -> FeatureNames:
    """Every feature's name and held-out score, for each layer in `firings`."""
    if not firings:
        raise ValueError("no layer's firings to name features from")
    tasks = [t for t in MAP_TASKS if t in vocab]
    n_labels = [len(vocab[t]) for t in tasks]
    w_VD = unembedding(lm)
    n_docs = n_documents(firings)
    # the layer map's draws (layermap: MAP_BOOT, seed 0), so their intervals pair
    w_BG = group_weights(n_docs, n_boot=MAP_BOOT) if n_docs else None
    layers = {h: _layer_names(lm, saes[h], f, tasks, n_labels, w_VD, w_BG)
              for h, f in firings.items()}
    ids = sorted({i for lay in layers.values() for k in ("tokens", "promotes")
                  for i in lay[k].unique().tolist() if i >= 0})
    strings = dict(zip(ids, lm.tokenizer.batch_decode([[i] for i in ids]), strict=True))
    first = next(iter(firings.values()))
    n_held = int(first.heldout_N.sum())
    return FeatureNames(list(firings), tasks, {t: list(vocab[t]) for t in tasks}, strings,
                        layers, (len(first.heldout_N) - n_held, n_held), fingerprint)


def _layer_names(lm: LM, sae: Sae, f: LayerFirings, tasks: list[str],
                 n_labels: list[int], w_VD: Tensor, w_BG: Tensor | None) -> dict[str, Tensor]:
    labels_TN = torch.stack([f.labels[t] for t in tasks])
    learn, held = (half_of(f.idx_NK, f.valid_NK, f.tokens_N, labels_TN, rows)
                   for rows in (~f.heldout_N, f.heldout_N))
    tokens_F3 = token_evidence(learn, f.d_sae)
    ev = Evidence(tokens_F3, *label_evidence(learn, n_labels, f.d_sae))
    score = name_scores(learn, held, n_labels, ev)
    w_dec = lm.to_residual(sae.cfg.hookpoint, sae.W_dec.detach())  # attn_z: through o_proj
    promotes_F3 = promoted_tokens(lm, w_dec, score.rule_F > 0, w_VD)
    support = torch.bincount(torch.cat([learn.feat_P, held.feat_P]), minlength=f.d_sae)
    out = {"tokens": tokens_F3, "task": ev.task_F, "label": ev.label_F,
           "promotes": promotes_F3, "rule": score.rule_F,
           "scores": torch.stack([score.precision_F, score.recall_F, score.f1_F], 1),
           "support": support}
    if w_BG is not None and f.doc_N is not None:
        out[DRAWS] = detected_draws(held, f.doc_N[f.heldout_N], ev, score.rule_F,
                                    support > 0, n_labels, w_BG)
    return out


# The score: how well each name detects its feature on held-out tokens.


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
    by_label = torch.zeros(n_features, dtype=torch.float64)  # cpu: host counts
    both = torch.zeros(n_features, dtype=torch.float64)  # cpu: host counts
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


# Names that detect their feature, per document draw and band of layers.


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
    table.index_put_((at_N[match], doc_N[match]), torch.ones(int(match.sum())),  # cpu: as above
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
    return options[rule_F, torch.arange(n_features)]  # cpu: host counts


def detected_draws(half: Half, doc_N: Tensor, ev: Evidence, rule_F: Tensor,
                   alive_F: Tensor, n_labels: list[int], w_BG: Tensor,
                   bar: float = DETECTED_F1) -> Tensor:
    """(B,) float32: how many alive features' names reach F1 `bar` on the held-out half
    `half` (its tokens' documents `doc_N`) in each document draw `w_BG`."""
    n_features, n_docs = len(rule_F), w_BG.shape[1]
    tok_hit, lab_hit = firing_hits(half, ev)
    rule_P = rule_F[half.feat_P]  # 1: tokens, 2: label, 3: either (RULES)
    by_tokens, by_label = (rule_P == 1) | (rule_P == 3), (rule_P == 2) | (rule_P == 3)
    hit_P = (by_tokens & tok_hit) | (by_label & lab_hit)
    doc_P = doc_N[half.row_P]
    fires_FG = torch.zeros(n_features, n_docs)  # cpu: host counts
    fires_FG.index_put_((half.feat_P, doc_P), torch.ones(len(doc_P)),  # cpu: host counts
                        accumulate=True)
    hits_FG = torch.zeros(n_features, n_docs)  # cpu: host counts
    hits_FG.index_put_((half.feat_P[hit_P], doc_P[hit_P]),
                       torch.ones(int(hit_P.sum())),  # cpu: host counts
                       accumulate=True)
    predicted_FG = predicted_by_document(half, doc_N, ev, rule_F, n_labels, n_docs)
    w_GB = w_BG.T.double()  # float64, as the score: F1 at the bar compares the same
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
