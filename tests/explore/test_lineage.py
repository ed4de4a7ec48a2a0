"""Lineage on hand-built layers: planted copies are found both ways, unrelated layers share
nothing, paths follow a planted chain, tokens are matched by position, the product is
stored and read back like the layer map."""

import os

import pytest
import torch

from sae_core.atomic import CorruptFile
from sae_core.config import SaeConfig
from sae_core.explore.feature_path import PathStop, feature_path
from sae_core.explore.firings import LayerFirings
from sae_core.explore.lineage import (
    LINEAGE_FILE,
    LineageData,
    co_firing_counts,
    compute_lineage,
    read_lineage,
    top_m,
)
from sae_core.sae import Sae
from tests.conftest import save_as_atlas

D, F, N = 256, 48, 300
"""In 256 dimensions random unit directions have |cosine| < 0.3 with near certainty; 48
features take top_m's grouped path (8 groups of 6 >= m)."""


def _sae(w_dec: torch.Tensor, h: str) -> Sae:
    sae = Sae(SaeConfig(d_in=D, d_sae=len(w_dec), k=4, hookpoint=h))
    with torch.no_grad():
        sae.W_dec.copy_(w_dec)
    return sae


def _random_rows(seed: int, n: int = F) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


def _fire(seed: int, rate: float = 0.2) -> torch.Tensor:
    """(N, F) bool firings at random."""
    return torch.rand(N, F, generator=torch.Generator().manual_seed(seed)) < rate


def _firings(fire_NF: torch.Tensor, where_N: torch.Tensor | None = None) -> LayerFirings:
    """Sparse codes of a dense firing matrix (padding slots hold junk ids, not valid)."""
    n, f = fire_NF.shape
    k = max(1, int(fire_NF.sum(1).max()))
    valid_NK, idx_NK = fire_NF.float().topk(k, dim=1)
    idx_NK = torch.where(valid_NK > 0, idx_NK, (idx_NK + 1) % f)
    vals_NK = valid_NK.float()
    where_N = torch.arange(n) if where_N is None else where_N
    return LayerFirings(torch.zeros(n, D, dtype=torch.bfloat16), {}, idx_NK, valid_NK > 0, f,
                        vals_NK, torch.zeros(n, dtype=torch.long), where_N,
                        torch.zeros(n, dtype=torch.bool))


def _rows(f: LayerFirings, rows: torch.Tensor) -> LayerFirings:
    """The same layer keeping only (and ordered as) `rows`."""
    return LayerFirings(f.x_ND[rows], {}, f.idx_NK[rows], f.valid_NK[rows], f.d_sae,
                        f.vals_NK[rows], f.tokens_N[rows], f.where_N[rows], f.heldout_N[rows])


def _planted_pair():
    """Layer 1's feature 7 is layer 0's feature 3 (decoder row twice as long, same tokens)."""
    w0, w1 = _random_rows(0), _random_rows(1)
    w1[7] = 2 * w0[3]
    fire0, fire1 = _fire(10), _fire(11)
    fire1[:, 7] = fire0[:, 3]
    saes = {"layers.0": _sae(w0, "layers.0"), "layers.1": _sae(w1, "layers.1")}
    return saes, {"layers.0": fire0, "layers.1": fire1}


def test_a_planted_copy_is_the_top_partner_by_both_measures_both_ways():
    saes, fire = _planted_pair()
    lin = compute_lineage(saes, {h: _firings(f) for h, f in fire.items()}, m=5)
    for by in ("cosine", "coact"):
        up = lin.neighbours("layers.0", 3, "up", by)
        down = lin.neighbours("layers.1", 7, "down", by)
        assert len(up) == 5 and up[0][0] == 7 and down[0][0] == 3
        for _, cos, jac in (up[0], down[0]):
            assert cos == pytest.approx(1.0, abs=1e-5) and jac == 1.0
        assert up[1][1 if by == "cosine" else 2] < 0.5  # the runner-up is far behind
    # every Jaccard against the firing sets themselves; the coact list has the best ones
    a, b = fire["layers.0"][:, 5:6], fire["layers.1"]
    direct = ((a & b).sum(0) / (a | b).sum(0)).tolist()
    for by in ("cosine", "coact"):
        for i, _, jac in lin.neighbours("layers.0", 5, "up", by):
            assert jac == pytest.approx(direct[i], abs=1e-6)
    best = [j for _, _, j in lin.neighbours("layers.0", 5, "up", "coact")]
    assert best == pytest.approx(sorted(direct, reverse=True)[:5], abs=1e-6)


@pytest.mark.parametrize("shape", [(40, 48), (48, 40), (13, 21), (16, 16)])
def test_top_m_finds_the_largest_entries_of_every_row_and_column(shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    x[3, :] = 0.5  # ties in one row
    for dim in (1, 0):
        vals, idx = top_m(x, 3, dim)
        line_first = x if dim == 1 else x.T
        assert torch.equal(vals, line_first.topk(3, dim=1).values)
        assert torch.equal(line_first.gather(1, idx), vals)


def test_co_firing_counts_are_the_token_overlaps():
    fire_a, fire_b = _fire(1, 0.3), _fire(2, 0.3)
    counts = co_firing_counts(_firings(fire_a), _firings(fire_b))
    assert torch.equal(counts.long(), (fire_a.long().T @ fire_b.long()))


def test_tokens_are_matched_by_position_and_a_dropped_token_does_not_fire():
    saes, fire = _planted_pair()
    f0, f1 = _firings(fire["layers.0"]), _firings(fire["layers.1"])
    base = compute_lineage(saes, {"layers.0": f0, "layers.1": f1})
    shuffled = _rows(f1, torch.randperm(N, generator=torch.Generator().manual_seed(5)))
    again = compute_lineage(saes, {"layers.0": f0, "layers.1": shuffled})
    assert all(torch.equal(again.tables[k], v) for k, v in base.tables.items())
    # layer 1 drops two tokens where the copied feature fires: they count as not firing
    on = fire["layers.0"][:, 3].nonzero().squeeze(1)
    kept = torch.ones(N, dtype=torch.bool)
    kept[on[:2]] = False
    dropped = compute_lineage(saes, {"layers.0": f0, "layers.1": _rows(f1, kept.nonzero()[:, 0])})
    best = dropped.neighbours("layers.0", 3, "up", "coact")[0]
    assert best[0] == 7 and best[2] == pytest.approx((len(on) - 2) / len(on))


def test_an_unrelated_layer_carries_nothing_and_planted_copies_are_counted():
    w0 = _random_rows(0)
    saes = {"layers.0": _sae(w0, "layers.0"), "layers.1": _sae(_random_rows(1), "layers.1")}
    lin = compute_lineage(saes, None)
    assert lin.turnover() == {"up": [0.0, None], "down": [None, 0.0]}
    assert all(c < 0.7 for i in range(F) for _, c, _ in lin.neighbours("layers.0", i))
    assert lin.neighbours("layers.0", 0)[0][2] is None  # no firings: no Jaccard
    with pytest.raises(ValueError, match="without firings"):
        lin.neighbours("layers.0", 0, by="coact")
    w1 = _random_rows(1)
    w1[:6] = w0[10:16] + 0.1 * _random_rows(2, 6) / D**0.5  # six near copies
    saes["layers.1"] = _sae(w1, "layers.1")
    assert compute_lineage(saes, None).turnover() == {"up": [6 / F, None], "down": [None, 6 / F]}
    # with firings only alive features count, and only alive partners
    fire0, fire1 = _fire(3), _fire(4)
    fire0[:, :4] = False  # four dead features in layer 0, none of them copied
    fire0[:, 15] = False  # and feature 15, copied: its copy (5) has no alive partner
    fire1[:, 0] = False  # the copy of layer 0's feature 10 is dead in layer 1
    firings = {"layers.0": _firings(fire0), "layers.1": _firings(fire1)}
    lin = compute_lineage(saes, firings)
    assert lin.turnover() == {"up": [pytest.approx(4 / (F - 5)), None],
                              "down": [None, pytest.approx(4 / (F - 1))]}
    assert lin.alive == [F - 5, F - 1]
    bands = lin.turnover_bands()  # each layer's alive features drawn again
    (lo, hi), (lo_d, hi_d) = bands["up"][0], bands["down"][1]
    assert lo < 4 / (F - 5) < hi and lo_d < 4 / (F - 1) < hi_d
    assert bands["up"][1] == (None, None) and compute_lineage(saes, None).alive == [F, F]
    assert lin.neighbours("layers.0", 0, "up", "coact") == []  # fires with nothing
    assert len(lin.neighbours("layers.0", 0, "up", "cosine")) == 5


def _chain():
    """Four layers; feature 2 -> 5 -> 9 are one direction (with a little noise) through
    layers 0-2; layer 3 is unrelated."""
    ws = [_random_rows(s) for s in range(4)]
    noise = [0.05 * _random_rows(20 + s, 1)[0] / D**0.5 for s in range(3)]
    for layer, f in ((0, 2), (1, 5), (2, 9)):
        ws[layer][f] = ws[0][2] / ws[0][2].norm() + noise[layer]
    return compute_lineage({f"layers.{i}": _sae(w, f"layers.{i}") for i, w in enumerate(ws)})


def test_the_path_follows_a_planted_chain_and_stops_where_it_breaks():
    lin = _chain()
    path = feature_path(lin, "layers.1", 5)
    assert [(s.hookpoint, s.feature) for s in path.steps] == [
        ("layers.0", 2), ("layers.1", 5), ("layers.2", 9)]
    assert path.start == 1 and path.steps[1].cosine is None
    assert all(s.cosine > 0.99 for i, s in enumerate(path.steps) if i != path.start)
    assert path.stop_down is None  # reached the first layer
    assert isinstance(path.stop_up, PathStop) and path.stop_up.hookpoint == "layers.3"
    assert path.stop_up.best_cosine < 0.3
    assert path.stop_up.best_cosine == lin.neighbours("layers.2", 9)[0][1]
    from_top = feature_path(lin, "layers.2", 9)
    assert [s.feature for s in from_top.steps] == [2, 5, 9] and from_top.start == 2
    unrelated = feature_path(lin, "layers.3", 0)
    assert len(unrelated.steps) == 1 and unrelated.stop_down.hookpoint == "layers.2"
    assert unrelated.stop_up is None  # the last layer: nothing above
    assert len(feature_path(lin, "layers.1", 5, floor=1.01).steps) == 1
    with pytest.raises(ValueError, match="no feature 99"):
        feature_path(lin, "layers.1", 99)
    with pytest.raises(ValueError, match="not in this lineage"):
        feature_path(lin, "layers.9", 0)


def test_saved_lineage_reads_back_and_a_stale_one_reads_as_none(tmp_path):
    saes, fire = _planted_pair()
    folder = tmp_path / "atlas"
    fingerprint = save_as_atlas(folder, saes)
    assert read_lineage(folder) is None and read_lineage(None) is None
    lin = compute_lineage(saes, {h: _firings(f) for h, f in fire.items()})
    lin.sae_fingerprint = fingerprint
    lin.save(folder / LINEAGE_FILE)
    back = read_lineage(folder)
    assert back is not None and read_lineage(folder) is back  # read once per version
    assert back.hookpoints == lin.hookpoints and back.m == 5 and back.has_coact
    assert back.turnover() == lin.turnover() and back.alive == lin.alive
    for by in ("cosine", "coact"):
        for (i, c, j), (i2, c2, j2) in zip(back.neighbours("layers.0", 3, "up", by),
                                           lin.neighbours("layers.0", 3, "up", by),
                                           strict=True):
            assert i == i2 and c == pytest.approx(c2, abs=1e-3) and j == pytest.approx(j2,
                                                                                      abs=1e-3)
    lin.sae_fingerprint = "other SAEs"
    lin.save(folder / LINEAGE_FILE)
    _touch_later(folder / "lineage.json")
    assert read_lineage(folder) is None  # stale: other SAEs
    (folder / LINEAGE_FILE).write_bytes(b"damaged")
    _touch_later(folder / "lineage.json")
    with pytest.raises(CorruptFile):
        read_lineage(folder)
    with pytest.raises(CorruptFile):
        LineageData.load(folder / LINEAGE_FILE)


def _touch_later(path) -> None:
    """A rewrite within one clock tick must still read as new (read_once keys on mtime)."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


def test_the_top_and_bottom_layers_have_no_neighbours_there():
    saes, _ = _planted_pair()
    lin = compute_lineage(saes)
    assert lin.neighbours("layers.1", 7, "up") == [] == lin.neighbours("layers.0", 3, "down")
    with pytest.raises(ValueError, match="direction"):
        lin.neighbours("layers.0", 3, "sideways")
    with pytest.raises(ValueError, match="no firings"):
        compute_lineage(saes, {"layers.0": _firings(_fire(1))})


def test_layers_of_different_widths():
    w0, w1 = _random_rows(0), _random_rows(1, 40)
    w1[39] = w0[0]
    fire0, fire1 = _fire(1), _fire(2)[:, :40]
    fire1[:, 39] = fire0[:, 0]
    saes = {"layers.0": _sae(w0, "layers.0"), "layers.1": _sae(w1, "layers.1")}
    lin = compute_lineage(saes, {"layers.0": _firings(fire0), "layers.1": _firings(fire1)})
    assert lin.tables["layers.0/up/coact/idx"].shape == (F, 5)
    assert lin.tables["layers.1/down/cosine/idx"].shape == (40, 5)
    assert lin.neighbours("layers.0", 0, "up", "coact")[0][:1] == (39,)
    assert lin.neighbours("layers.1", 39, "down")[0][0] == 0
