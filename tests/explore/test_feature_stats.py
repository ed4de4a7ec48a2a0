"""What the index stores per feature, on hand-made codes and against brute force."""

import pytest
import torch

from sae_core.explore.feature_stats import IndexConfig, index_layer
from tests.explore.index_helpers import _brute_force

SEQ, CHUNK = 8, 4  # 3 windows of 8 tokens, chunks of 4


def _codes(firings: dict[int, list[tuple[int, float]]], n_tokens: int = 24, k: int = 2):
    """(T, k) values and ids from {token: [(feature, value), ...]}; unused slots are 0."""
    vals, idx = torch.zeros(n_tokens, k), torch.zeros(n_tokens, k, dtype=torch.int32)
    for t, fired in firings.items():
        for slot, (f, v) in enumerate(fired):
            vals[t, slot], idx[t, slot] = v, f
    return vals, idx


HAND = {  # token: [(feature, activation)]; token t is window t // 8, position t % 8
    1: [(0, 0.5)], 2: [(0, 0.9), (2, 1.0)], 3: [(2, 3.0)], 5: [(0, 0.9)],
    9: [(0, 2.0), (2, 1.0)], 10: [(0, 0.25)], 13: [(2, 1.0)], 20: [(0, 0.1), (2, 1.0)],
}


def test_index_returns_exactly_the_top_contexts():
    cfg = IndexConfig(top_n=3, chunk=CHUNK, left=2, right=1, quantiles=(0.0, 1.0), hist_bins=4)
    out = index_layer(*_codes(HAND), d_sae=3, seq_len=SEQ, cfg=cfg)
    # Feature 0: chunk 0 peaks at token 2 (0.9 beats 0.5 at token 1), chunk 1 at token 5
    # (0.9, tie with token 2: the earlier token ranks first), chunk 2 at token 9 (2.0; 0.25
    # at token 10 is in the same chunk), chunk 5 at token 20.
    assert out["top_tok"][0].tolist() == [9, 2, 5]
    assert out["top_val"][0].tolist() == pytest.approx([2.0, 0.9, 0.9])
    assert out["n_ctx"].tolist() == [4, 0, 4] and out["n_fire"].tolist() == [6, 0, 5]
    # Quantile 0 is the weakest context (rank 3, outside the top 3); quantile 1 is the
    # strongest, already shown, so it is left empty.
    assert out["q_tok"][0].tolist() == [20, -1]
    assert out["q_val"][0, 0] == pytest.approx(0.1)
    # Feature 1 never fires: no contexts at all.
    assert (out["top_tok"][1] == -1).all() and (out["q_tok"][1] == -1).all()
    assert out["hist"][1].sum() == 0
    # Feature 2: chunk 0 peaks at token 3 (3.0 beats 1.0 at token 2) and leads; chunks 2, 3
    # and 5 (tokens 9, 13, 20) tie at 1.0 and rank by token.
    assert out["top_tok"][2].tolist() == [3, 9, 13]
    # Snippet of feature 0 around token 9 (window 1, position 1): offsets -2..1 are tokens
    # 7 (other window), 8 (position 0), 9 (the peak), 10.
    assert out["top_acts"][0, 0].tolist() == pytest.approx([0, 0, 2.0, 0.25], rel=1e-3)
    # Around token 2: tokens 0 (position 0, never shown), 1, 2, 3 (feature 0 silent there).
    assert out["top_acts"][0, 1].tolist() == pytest.approx([0, 0.5, 0.9, 0], rel=1e-3)


def test_index_matches_brute_force_on_random_codes():
    gen = torch.Generator().manual_seed(0)
    T, K, F, L = 20 * 16, 4, 40, 16
    vals = torch.rand(T, K, generator=gen).round(decimals=1)  # many ties and zeros
    idx = torch.stack([torch.randperm(F, generator=gen)[:K] for _ in range(T)]).int()
    cfg = IndexConfig(top_n=5, chunk=4)
    out = index_layer(vals, idx, F, L, cfg)
    expected = _brute_force(vals, idx, F, L, cfg)
    for f in range(F):
        got = [t for t in out["top_tok"][f].tolist() if t >= 0]
        assert got == expected.get(f, []), f
    dense = torch.zeros(T, F).scatter_(1, idx.long(), vals)
    for f in range(F):
        for s, t in enumerate(out["top_tok"][f].tolist()):
            for j, o in enumerate(range(-cfg.left, cfg.right + 1)):
                u = t + o
                shown = t >= 0 and u // L == t // L and u % L > 0
                want = float(dense[u, f]) if shown else 0.0
                assert float(out["top_acts"][f, s, j]) == pytest.approx(want, rel=1e-3)
    fires = vals > 0
    assert out["n_fire"].tolist() == torch.bincount(idx[fires].long(), minlength=F).tolist()
    assert torch.equal(out["hist"].sum(1).long(), out["n_fire"])


def test_histogram_bins_are_log_spaced():
    vals, idx = _codes({1: [(0, 1.0)], 2: [(0, 10.0)], 3: [(0, 100.0)], 4: [(0, 9.9)]})
    out = index_layer(vals, idx, 1, SEQ, IndexConfig(hist_bins=2))
    # 1, 9.9 below sqrt(1 * 100) = 10; 10 and 100 at or above it.
    assert out["hist"][0].tolist() == [2, 2]
    assert (out["hist_lo"][0], out["hist_hi"][0]) == (1.0, 100.0)
