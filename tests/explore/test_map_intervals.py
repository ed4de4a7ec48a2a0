"""The layer map's bootstrap over documents: a draw that keeps every document once is the
map itself; a draw of one document is that document's map; planted shares sit inside."""

import torch

from sae_core.explore.consistency import base_rates, feature_stats, layer_map, pair_counts
from sae_core.explore.controls import Firings
from sae_core.explore.layermap import (
    draw_rates,
    per_document_counts,
    share_draws,
    share_interval,
)
from sae_core.stats import group_weights

N, F, L, G = 3000, 80, 5, 30


def _planted(seed=0):
    """Tokens in G documents, labels skewed; features firing on tokens of mostly one label,
    so some pass the criteria and some do not (ties and low support included)."""
    gen = torch.Generator().manual_seed(seed)
    doc_N = torch.randint(0, G, (N,), generator=gen).sort().values
    label_N = (torch.rand(N, generator=gen) ** 2 * L).long()
    feats, toks = [], []
    for f in range(F):
        want = f % L
        pool = (label_N == want).nonzero().squeeze(1)
        n = int(torch.randint(1, 60, (1,), generator=gen))
        own = pool[torch.randint(0, len(pool), (n,), generator=gen)].unique()
        other = torch.randint(0, N, (int(n * (f % 4) / 6) + 1,), generator=gen)
        tok = torch.cat([own, other]).unique()
        feats.append(torch.full((len(tok),), f))
        toks.append(tok)
    return Firings(torch.cat(feats), torch.cat(toks)), label_N, doc_N


CRIT = dict(threshold=0.8, min_support=10, min_lift=1.5)


def _share(firings, label_N, rows=None):
    keep = torch.ones(N, dtype=torch.bool) if rows is None else rows
    fired = keep[firings.tok_P]
    counts = pair_counts(firings.feat_P[fired], label_N[firings.tok_P[fired]], F, L)
    stats = feature_stats(counts, base_rates(label_N[keep], L))
    return layer_map(stats, CRIT["threshold"], CRIT["min_support"], L,
                     CRIT["min_lift"]).share_accepted


def test_the_draw_of_every_document_once_is_the_map_itself():
    firings, label_N, doc_N = _planted()
    w_BG = torch.ones(1, G, dtype=torch.float64)
    per_doc = per_document_counts(firings, label_N, doc_N, F, L, G)
    got = share_draws(per_doc, F, L, draw_rates(label_N, doc_N, L, w_BG), w_BG, **CRIT)
    want = _share(firings, label_N)
    assert 0.05 < want < 0.95  # some features pass, some do not
    assert float(got[0]) == want


def test_a_draw_of_one_document_is_that_documents_map():
    """(Drawn five times it would not be: support, and so min_support, counts repeats.)"""
    firings, label_N, doc_N = _planted(1)
    w_BG = torch.zeros(3, G, dtype=torch.float64)
    for b, d in enumerate((0, 7, 29)):
        w_BG[b, d] = 1.0
    per_doc = per_document_counts(firings, label_N, doc_N, F, L, G)
    got = share_draws(per_doc, F, L, draw_rates(label_N, doc_N, L, w_BG), w_BG, **CRIT)
    for b, d in enumerate((0, 7, 29)):
        assert float(got[b]) == _share(firings, label_N, doc_N == d)


def test_the_interval_holds_the_share_and_narrows_with_more_documents():
    firings, label_N, doc_N = _planted(2)
    share = _share(firings, label_N)
    lo, hi = share_interval(firings, label_N, doc_N, F, L, group_weights(G, n_boot=200),
                            **CRIT)
    assert lo <= share <= hi and hi - lo > 0
    one_doc = torch.zeros(N, dtype=torch.long)  # a single document: nothing to resample
    assert share_interval(firings, label_N, one_doc, F, L, group_weights(1, n_boot=50),
                          **CRIT) == (share, share)
