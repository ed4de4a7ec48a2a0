"""The layer map: label counts per layer and task for SAE features and four controls.

For every hookpoint and labelling task we keep the (features, labels) count matrix of
firings, for five kinds of "features":
- `sae`: the SAE's latents, firing where their activation is > 0 (sae_core/encode.py);
- `neuron`, `random`, `whitened`: raw dimensions, random directions and random directions
  in whitened space, one per SAE feature, each firing on as many of its top tokens as its
  paired SAE feature fires (the SAE's support distribution, controls.py);
- `topk_random`: a random dictionary of the SAE's width read through the SAE's TopK.
Base rates (for lift) are each layer's own tokens' labels. Counts are computed once
(`ensure_layer_map`, stored in the atlas folder); thresholds are applied later in
milliseconds (`LayerMapData.heatmap`).

At the app's default criteria (`CRITERIA`) every per-layer accepted share also has an
interval, stored in layer_map.json: a bootstrap over documents (`map_intervals`, at the end
of this module). A draw weights every corpus document by how often it was drawn
(sae_core/stats.py, the same draws for every layer, kind and task), so a feature's (label)
counts in the draw are its per-document counts weighted and summed, and the base rates are
the layer's token labels weighted the same way. The accepted share is then recomputed per
draw exactly as consistency.accepted computes it (all weights 1 gives the share itself).
Firings stay where they are in a draw (a control's top tokens are not ranked again): the
interval is of the share's sampling error over documents, given the features.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from ..activations import OUTLIER_FACTOR
from ..atlas.layout import LAYER_MAP_FILE, read_derived
from ..atlas.writing import atlas_lock
from ..atomic import CorruptFile, load_tensors, read_json, save_tensors, write_json
from ..lm import LM
from ..progress import Report
from ..sae import Sae
from ..stats import group_weights, percentile_interval
from .consistency import (
    FeatureStats,
    accepted,
    base_rates,
    feature_stats,
    layer_map,
    pair_counts,
)
from .controls import CONTROL_KINDS, Firings, control_firings, sae_firings
from .firings import MAP_TASKS, LayerFirings, collect_firings, labelled_pass, n_documents
from .labels import LabelledWindows

log = logging.getLogger(__name__)
KINDS = ("sae", *CONTROL_KINDS)
MAP_FORMAT = 3
"""3: support-matched controls, the TopK random dictionary, per-layer base rates and
intervals; a map of another format is rebuilt."""


class Criteria(NamedTuple):
    threshold: float
    min_support: int
    min_lift: float


CRITERIA = Criteria(threshold=0.8, min_support=20, min_lift=2.0)
"""The app's default acceptance criteria: the intervals are computed at these."""
MAP_BOOT = 200
"""Document draws per interval: 30 layers x 4 tasks x 5 kinds of shares each recount every
feature's labels per draw."""
LEVEL = 0.95
DRAW_CHUNK = 40
"""Draws whose (features, labels) counts are held at once (dep, 4608 features: ~35 MB)."""


@dataclass
class LayerMapData:
    hookpoints: list[str]
    vocab: dict[str, list[str]]
    counts: dict[str, Tensor]
    """f"{kind}/{hookpoint}/{task}" -> (n_features, n_labels) firing counts."""
    base_rate: dict[str, Tensor]
    """f"{hookpoint}/{task}" -> (n_labels,) share of that layer's mapped tokens with each
    label (a plain `task` key, as older maps have, serves every layer)."""
    n_tokens: int
    fire_rate: float
    """Mean SAE firing rate over layers (each layer's firings / (its tokens x its own d_sae))."""
    _stats: dict[str, FeatureStats] = field(default_factory=dict, repr=False)
    sae_fingerprint: str = ""
    """Of the SAEs it was computed from (atlas/fingerprint.py): another atlas's is stale."""
    intervals: dict = field(default_factory=dict)
    """`map_intervals`: {"setting": criteria, draws, level, documents;
    "share": f"{kind}/{task}" -> per layer [lo, hi]}; empty when not computed."""
    draws: dict[str, Tensor] = field(default_factory=dict)
    """f"{kind}/{task}" -> (n_layers, n_boot) accepted share in each document draw."""

    def rate(self, hookpoint: str, task: str) -> Tensor:
        """(n_labels,) base rates of `hookpoint`'s tokens."""
        return self.base_rate.get(f"{hookpoint}/{task}", self.base_rate.get(task))

    def label_share(self, task: str) -> Tensor:
        """(n_labels,) base rates averaged over layers (which labels occur, how often)."""
        return torch.stack([self.rate(h, task) for h in self.hookpoints]).mean(dim=0)

    def stats(self, kind: str, hookpoint: str, task: str) -> FeatureStats:
        key = f"{kind}/{hookpoint}/{task}"
        if key not in self._stats:
            self._stats[key] = feature_stats(self.counts[key], self.rate(hookpoint, task))
        return self._stats[key]

    def accept_interval(self, task: str, threshold: float, min_support: int, kind: str,
                        min_lift: float = 0.0) -> list[tuple[float, float]] | None:
        """Per layer: (lo, hi) of the accepted share, None unless the intervals were
        computed at these criteria."""
        setting = self.intervals.get("setting")
        asked = Criteria(float(threshold), int(min_support), float(min_lift))
        if not setting or Criteria(**setting["criteria"]) != asked:
            return None
        rows = self.intervals["share"].get(f"{kind}/{task}")
        return [tuple(r) for r in rows] if rows is not None else None

    def band_interval(self, task: str, kind: str, layers: list[int],
                      minus: str | None = None) -> tuple[float, float, float] | None:
        """(point, lo, hi) of the accepted share averaged over `layers` (indices into
        hookpoints), less kind `minus`'s when given, at the intervals' criteria; None
        without draws."""
        key, other = f"{kind}/{task}", f"{minus}/{task}"
        if key not in self.draws or (minus and other not in self.draws):
            return None
        crit = self.intervals["setting"]["criteria"]

        def mean(k: str) -> float:
            shares = self.accept_share(task, crit["threshold"], crit["min_support"], k,
                                       crit["min_lift"])
            return sum(shares[i] for i in layers) / len(layers)

        lo, hi = draws_interval(self.draws[key], layers, self.draws[other] if minus else None)
        return mean(kind) - (mean(minus) if minus else 0.0), lo, hi

    def heatmap(self, task: str, threshold: float, min_support: int, kind: str = "sae",
                min_lift: float = 0.0) -> Tensor:
        """(n_layers, n_labels) accepted features per layer and label."""
        n_labels = len(self.vocab[task])
        return torch.stack([
            layer_map(self.stats(kind, h, task), threshold, min_support, n_labels, min_lift)
            .n_accepted for h in self.hookpoints
        ])

    def accept_share(self, task: str, threshold: float, min_support: int, kind: str,
                     min_lift: float = 0.0) -> list[float]:
        """Per layer: share of all features accepted for some label."""
        n_labels = len(self.vocab[task])
        return [layer_map(self.stats(kind, h, task), threshold, min_support, n_labels, min_lift)
                .share_accepted for h in self.hookpoints]

    def cell_features(self, kind: str, hookpoint: str, task: str, label: str, threshold: float,
                      min_support: int, min_lift: float = 0.0) -> Tensor:
        """Ids of the accepted features whose `task` label is `label`, most consistent first
        (then most firings, then lowest id)."""
        if label not in self.vocab[task]:
            raise ValueError(f"unknown {task} label {label!r}")
        s = self.stats(kind, hookpoint, task)
        mask = (s.label == self.vocab[task].index(label))
        ids = (mask & accepted(s, threshold, min_support, min_lift)).nonzero().squeeze(1)
        ids = ids[s.support[ids].argsort(descending=True, stable=True)]
        return ids[s.consistency[ids].argsort(descending=True, stable=True)]

    def save(self, path: Path) -> None:
        """The counts, then the .json (the marker of a whole map), each written atomically."""
        path.with_suffix(".json").unlink(missing_ok=True)
        tensors = (dict(self.counts) | {f"base_rate/{t}": r for t, r in self.base_rate.items()}
                   | {f"draws/{k}": d.contiguous() for k, d in self.draws.items()})
        save_tensors(path, tensors)
        meta = {"hookpoints": self.hookpoints, "vocab": self.vocab, "n_tokens": self.n_tokens,
                "fire_rate": self.fire_rate, "sae_fingerprint": self.sae_fingerprint,
                "format": MAP_FORMAT, "intervals": self.intervals}
        write_json(path.with_suffix(".json"), meta, indent=None)

    @classmethod
    def load(cls, path: Path) -> LayerMapData:
        """CorruptFile when either file is truncated or damaged."""
        meta = read_json(path.with_suffix(".json"))
        tensors = load_tensors(path)
        base = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("base_rate/")}
        draws = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("draws/")}
        counts = {k: v for k, v in tensors.items() if not k.startswith(("base_rate/", "draws/"))}
        # an older format reads as stale (no fingerprint matches), so it is rebuilt
        fingerprint = meta.get("sae_fingerprint", "") if meta.get("format") == MAP_FORMAT else ""
        return cls(meta["hookpoints"], meta["vocab"], counts, base, meta["n_tokens"],
                   meta["fire_rate"], sae_fingerprint=fingerprint,
                   intervals=meta.get("intervals") or {}, draws=draws)


def counts_from_firings(
    firings: dict[str, LayerFirings], vocab: dict[str, list[str]], centres: dict[str, Tensor],
    *, seed: int = 0, n_boot: int = MAP_BOOT, criteria: Criteria = CRITERIA,
) -> LayerMapData:
    """All label counts: SAE features and the controls (controls.py) read from `centres`
    (each SAE's b_dec), every layer; with `n_boot` > 0 and documents known, the intervals of
    every accepted share at `criteria` (`map_intervals`)."""
    n_labels = {t: len(vocab[t]) for t in MAP_TASKS}
    counts, base, rates, fired = {}, {}, [], {}
    for i, (h, f) in enumerate(firings.items()):
        sae = sae_firings(f.idx_NK, f.valid_NK)
        fired[h] = {"sae": sae} | control_firings(f.x_ND, centres[h], sae, f.d_sae,
                                                 seed=seed + i)
        rates.append(len(sae.feat_P) / (len(f.x_ND) * f.d_sae))
        for t in MAP_TASKS:
            base[f"{h}/{t}"] = base_rates(f.labels[t], n_labels[t])
            for kind, fk in fired[h].items():
                counts[f"{kind}/{h}/{t}"] = pair_counts(
                    fk.feat_P, f.labels[t][fk.tok_P], f.d_sae, n_labels[t])
    first = next(iter(firings.values()))
    lmap = LayerMapData(list(firings), {t: vocab[t] for t in MAP_TASKS}, counts, base,
                        len(first.x_ND), sum(rates) / len(rates))
    if n_boot > 0 and all(f.doc_N is not None for f in firings.values()):
        lmap.intervals, lmap.draws = map_intervals(lmap, firings, fired, criteria,
                                                   n_boot=n_boot, seed=seed)
    return lmap


def compute_layer_map(
    lm: LM, saes: dict[str, Sae], medians: dict[str, float], data: LabelledWindows, *,
    outlier_factor: float = OUTLIER_FACTOR, batch: int = 16, seed: int = 0,
) -> LayerMapData:
    """Count firings per label for every SAE and the three controls on the labelled windows."""
    firings = collect_firings(lm, saes, medians, data, outlier_factor=outlier_factor,
                              batch=batch)
    return counts_from_firings(firings, data.vocab, centres_of(saes), seed=seed)


def centres_of(saes: dict[str, Sae]) -> dict[str, Tensor]:
    """Where each SAE encodes from: its b_dec, the controls' centre."""
    return {h: sae.b_dec.detach().float().cpu() for h, sae in saes.items()}  # as firings


def read_layer_map(folder: Path | str | None, fingerprint: str | None = None
                   ) -> LayerMapData | None:
    """The layer map of an atlas folder, read once per version on disk; None when it was
    never built or was computed from other SAEs than the folder's (stale); CorruptFile when
    a file of it is damaged. Every reader goes through here, so a map built later is seen by
    all, and one of other SAEs by none."""
    return read_derived(folder, LAYER_MAP_FILE, LayerMapData.load, fingerprint)


def has_layer_map(folder: Path) -> bool:
    """Whether a whole, current layer map is on disk (a damaged one counts as missing)."""
    try:
        return read_layer_map(folder) is not None
    except CorruptFile:
        return False


def ensure_layer_map(folder: Path, *, lm: LM | None = None,
                     report: Report | None = None) -> LayerMapData:
    """The atlas's layer map alone, computed once and cached; one that is stale or damaged
    is reported and computed again (explore/evidence.py builds it with the other layer
    evidence from the same pass)."""
    folder = Path(folder)
    try:
        if (lmap := read_layer_map(folder)) is not None:
            return lmap
    except CorruptFile as err:
        log.warning("%s", err)
        if report:
            report(f"rebuilding the damaged layer map: {err}", 0.0)
    run = labelled_pass(folder, lm, report)
    lmap = counts_from_firings(run.firings, run.vocab, centres_of(run.saes))
    lmap.sae_fingerprint = run.fingerprint
    with atlas_lock(folder):
        lmap.save(folder / LAYER_MAP_FILE)
    return lmap


# The intervals of the accepted shares: a bootstrap over documents (module doc).


def per_document_counts(firings: Firings, label_N: Tensor, doc_N: Tensor, n_features: int,
                        n_labels: int, n_docs: int) -> Tensor:
    """(n_features * n_labels, n_docs) sparse float32: firings of each (feature, label) in
    each document (row f * n_labels + label)."""
    row_P = firings.feat_P * n_labels + label_N[firings.tok_P].long()
    idx_2P = torch.stack([row_P, doc_N[firings.tok_P].long()])
    ones_P = torch.ones(len(row_P))  # cpu: host counts, exact in float32 below 2**24
    shape = (n_features * n_labels, n_docs)
    return torch.sparse_coo_tensor(idx_2P, ones_P, shape, check_invariants=True).coalesce()


def _shares_of(counts_FLB: Tensor, rate_BL: Tensor, threshold: float, min_support: int,
               min_lift: float) -> Tensor:
    """(B,) accepted share per draw (consistency.feature_stats + accepted, over draws)."""
    support_FB = counts_FLB.sum(dim=1)
    top_FB = counts_FLB.max(dim=1).values
    # the lowest label id among ties, as feature_stats picks it
    label_FB = (counts_FLB == top_FB[:, None, :]).int().argmax(dim=1)
    consistency_FB = top_FB.double() / support_FB.clamp(min=1).double()
    rate_FB = rate_BL.T.gather(0, label_FB)
    lift_FB = consistency_FB / rate_FB  # x / 0 = inf, as feature_stats
    ok_FB = ((support_FB >= max(int(min_support), 1)) & (consistency_FB >= threshold)
             & (lift_FB >= min_lift))
    return ok_FB.sum(dim=0).double() / counts_FLB.shape[0]


def share_draws(per_doc: Tensor, n_features: int, n_labels: int, rate_BL: Tensor,
                w_BG: Tensor, *, threshold: float, min_support: int, min_lift: float
                ) -> Tensor:
    """(B,) float32 accepted share in each draw of documents `w_BG` (weights, stats.py);
    `per_doc` from `per_document_counts`, `rate_BL` the draws' base rates (`draw_rates`)."""
    out = []
    for s in range(0, len(w_BG), DRAW_CHUNK):
        w_GC = w_BG[s:s + DRAW_CHUNK].T.float().contiguous()
        counts_FLC = torch.sparse.mm(per_doc, w_GC).view(n_features, n_labels, -1)
        out.append(_shares_of(counts_FLC, rate_BL[s:s + DRAW_CHUNK], threshold, min_support,
                              min_lift))
    return torch.cat(out)


def draw_rates(label_N: Tensor, doc_N: Tensor, n_labels: int, w_BG: Tensor) -> Tensor:
    """(B, n_labels) float64 base rates of the layer's tokens in each draw of documents."""
    per_doc_GL = torch.zeros(w_BG.shape[1], n_labels, dtype=torch.float64)  # cpu: host
    ones_N = torch.ones(len(label_N), dtype=torch.float64)  # cpu: host counts
    per_doc_GL.index_put_((doc_N.long(), label_N.long()), ones_N, accumulate=True)
    counts_BL = w_BG.double() @ per_doc_GL
    return counts_BL / counts_BL.sum(dim=1, keepdim=True).clamp(min=1)


def share_interval(firings: Firings, label_N: Tensor, doc_N: Tensor, n_features: int,
                   n_labels: int, w_BG: Tensor, *, threshold: float, min_support: int,
                   min_lift: float, level: float = LEVEL) -> tuple[float, float]:
    """(lo, hi): the `level` percentile interval of the accepted share over the document
    draws `w_BG` (all documents of the corpus, one column each; `doc_N` indexes them)."""
    draws_B = layer_draws(firings, label_N, doc_N, n_features, n_labels, w_BG,
                          threshold=threshold, min_support=min_support, min_lift=min_lift)
    return percentile_interval(draws_B, level)


def layer_draws(firings: Firings, label_N: Tensor, doc_N: Tensor, n_features: int,
                n_labels: int, w_BG: Tensor, *, threshold: float, min_support: int,
                min_lift: float) -> Tensor:
    """(B,) one layer's accepted share in each document draw of `w_BG`."""
    per_doc = per_document_counts(firings, label_N, doc_N, n_features, n_labels, w_BG.shape[1])
    rate_BL = draw_rates(label_N, doc_N, n_labels, w_BG)
    return share_draws(per_doc, n_features, n_labels, rate_BL, w_BG, threshold=threshold,
                       min_support=min_support, min_lift=min_lift)


def map_intervals(lmap: LayerMapData, firings: dict[str, LayerFirings],
                  fired: dict[str, dict[str, Firings]], criteria: Criteria, *,
                  n_boot: int = MAP_BOOT, seed: int = 0, level: float = LEVEL
                  ) -> tuple[dict, dict[str, Tensor]]:
    """(LayerMapData.intervals, LayerMapData.draws): for every kind and task, per layer, the
    accepted share's interval, and its value in each draw: the same `n_boot` draws of
    documents for every layer and kind, so a mean over layers or a difference of kinds has
    its interval from the same draws (`draws_interval`)."""
    n_docs = max(n_documents(firings), 1)
    w_BG = group_weights(n_docs, n_boot=n_boot, seed=seed)
    rows: dict[str, list[Tensor]] = {}
    for h, f in firings.items():
        for task in lmap.vocab:
            for kind, fk in fired[h].items():
                rows.setdefault(f"{kind}/{task}", []).append(layer_draws(
                    fk, f.labels[task], f.doc_N, f.d_sae, len(lmap.vocab[task]), w_BG,
                    **criteria._asdict()))
    draws = {key: torch.stack(r) for key, r in rows.items()}  # (n_layers, B) each
    share = {key: [list(percentile_interval(d_B, level)) for d_B in d_LB]
             for key, d_LB in draws.items()}
    setting = {"criteria": criteria._asdict(), "draws": n_boot, "level": level,
               "documents": n_docs, "seed": seed, "unit": "document"}
    return {"setting": setting, "share": share}, draws


def draws_interval(draws_LB: Tensor, layers: list[int], minus_LB: Tensor | None = None,
                   level: float = LEVEL) -> tuple[float, float]:
    """(lo, hi) of the mean over `layers` of a share (less another's, same draws)."""
    d_B = draws_LB[layers].double().mean(dim=0)
    if minus_LB is not None:
        d_B = d_B - minus_LB[layers].double().mean(dim=0)
    return percentile_interval(d_B, level)
