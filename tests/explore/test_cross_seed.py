"""Lineage's cross-seed baseline on planted decoders: a noisy copy of a layer's dictionary
is found again (~1.0), an unrelated one is not (~0), and the next-layer share is lineage's
own turnover."""

import torch

from sae_core.config import SaeConfig
from sae_core.explore.cross_seed import cross_seed_shares, next_layer_shares, partner_share
from sae_core.explore.lineage import compute_lineage
from sae_core.sae import Sae

D, F = 256, 64
"""In 256 dimensions random unit directions have |cosine| < 0.3 with near certainty."""


def _sae(w_dec: torch.Tensor, h: str = "layers.3") -> Sae:
    sae = Sae(SaeConfig(d_in=D, d_sae=len(w_dec), k=4, hookpoint=h))
    with torch.no_grad():
        sae.W_dec.copy_(w_dec)
    return sae


def _rows(seed: int, n: int = F, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


def test_a_noisy_permuted_copy_is_found_again_and_a_random_dictionary_is_not():
    w = _rows(0)
    copy = (w + _rows(1, scale=0.3))[torch.randperm(F, generator=torch.Generator()
                                                    .manual_seed(2))]  # cos ~0.96
    assert partner_share(_sae(w), _sae(copy)) == (1.0, 1.0)
    assert partner_share(_sae(w), _sae(_rows(3))) == (0.0, 0.0)


def test_half_the_features_shared_and_other_widths():
    w = _rows(0)
    half = torch.cat([w[: F // 2] + _rows(1, F // 2, 0.3), _rows(4, 3 * F // 2)])  # 2x width
    a_in_b, b_in_a = partner_share(_sae(w), _sae(half))
    assert a_in_b == 0.5 and b_in_a == 0.25


def test_dead_features_count_neither_way():
    w = _rows(0)
    alive = torch.arange(F) < F // 4
    share = partner_share(_sae(w), _sae(w.clone()), alive_a=alive, alive_b=alive)
    assert share == (1.0, 1.0)  # only alive features are counted, and only alive partners
    assert partner_share(_sae(w), _sae(w.clone()), alive_b=alive)[0] == 0.25


def test_per_hookpoint_shares_and_the_next_layer_share_is_lineages_turnover():
    w0, w1 = _rows(0), _rows(5)
    w2 = torch.cat([w1[:16] + _rows(6, 16, 0.3), _rows(7, F - 16)])
    saes = {f"layers.{i}": _sae(w, f"layers.{i}") for i, w in enumerate((w0, w1, w2))}
    seed_1 = {"layers.0": _sae(w0 + _rows(8, scale=0.3), "layers.0"),
              "layers.2": _sae(_rows(9), "layers.2")}
    assert cross_seed_shares(saes, seed_1) == {"layers.0": 1.0, "layers.2": 0.0}
    nxt = next_layer_shares(saes)
    assert nxt == {"layers.0": 0.0, "layers.1": 0.25}
    assert list(nxt.values()) == compute_lineage(saes).turnover_up[:2]
