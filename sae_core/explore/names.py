"""A name for every feature, from evidence, with a score of how well it detects the feature.

A name reads like `' the' ' a' · DET → ' cat'`: the tokens the feature fires on far more
often than their base rate, its consistent label, and after the arrow the output tokens its
decoder row promotes (names_evidence.py). A feature with neither tokens nor label is
"unnamed", one that never fired on the labelled tokens "dead". Evidence is learnt on the
learn half of the labelled tokens; the score is the held-out precision, recall and F1 of the
name as a detector of "the feature fires" (names_score.py). Names are computed once per atlas
(`compute_names`), stored next to the layer map keyed by the SAE fingerprint, and read with
`read_names` (None when missing or stale).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from ..atlas.layout import read_derived
from ..atomic import CorruptFile, load_tensors, read_json, save_tensors, write_json
from ..lm import LM
from ..sae import Sae
from ..stats import group_weights
from .firings import MAP_TASKS, LayerFirings, n_documents
from .map_intervals import MAP_BOOT
from .names_draws import DRAWS, detected_draws
from .names_evidence import (
    half_of,
    label_evidence,
    promoted_tokens,
    token_evidence,
    unembedding,
)
from .names_score import RULES, Evidence, name_scores

log = logging.getLogger(__name__)
NAMES_FILE = "names.safetensors"
"""In the atlas folder, with names.json (written last: the marker of whole names)."""
LOW_SCORE = 0.3
"""A name with held-out F1 below this is a weak fit (the app marks it "?")."""
FIELDS = ("tokens", "task", "label", "promotes", "rule", "scores", "support")


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
    label (F,) (-1: none), rule (F,) into names_score.RULES, scores (F, 3) held-out
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


def read_names(folder: Path | str | None) -> FeatureNames | None:
    """The current names of an atlas folder, or None (atlas/layout.read_derived)."""
    return read_derived(folder, NAMES_FILE, FeatureNames.load)


def readable_names(folder: Path | str | None) -> FeatureNames | None:
    """The current names, or None when missing, stale or unreadable (logged): every view
    then shows feature ids alone."""
    try:
        return read_names(folder)
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
    # the layer map's draws (map_intervals: MAP_BOOT, seed 0), so their intervals pair
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
