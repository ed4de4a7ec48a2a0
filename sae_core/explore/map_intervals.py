"""Intervals of the layer map's accepted shares: a bootstrap over documents.

A draw weights every corpus document by how often it was drawn (sae_core/stats.py, the same
draws for every layer, kind and task), so a feature's (label) counts in the draw are its
per-document counts weighted and summed, and the base rates are the layer's token labels
weighted the same way. The accepted share is then recomputed per draw exactly as
consistency.accepted computes it (all weights 1 gives the share itself).

Firings stay where they are in a draw (a control's top tokens are not ranked again): the
interval is of the share's sampling error over documents, given the features.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from ..stats import group_weights, percentile_interval
from .controls import Firings
from .firings import n_documents

if TYPE_CHECKING:
    from .firings import LayerFirings
    from .layermap import LayerMapData

MAP_BOOT = 200
"""Document draws per interval: 30 layers x 4 tasks x 5 kinds of shares each recount every
feature's labels per draw."""
LEVEL = 0.95


class Criteria(NamedTuple):
    threshold: float
    min_support: int
    min_lift: float


DRAW_CHUNK = 40
"""Draws whose (features, labels) counts are held at once (dep, 4608 features: ~35 MB)."""


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
