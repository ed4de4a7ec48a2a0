"""The layer map's controls: each fires as often as its paired SAE feature (the same support
histogram), the random dictionary fires k per token, centring cannot move a top set, and
whitening stops random directions from all firing on the same few high-norm tokens."""

import pytest
import torch

from sae_core.explore.consistency import topq_tokens
from sae_core.explore.controls import (
    DIRECTION_KINDS,
    control_directions,
    control_firings,
    matched_firings,
    matched_supports,
    sae_firings,
    topk_dictionary_firings,
    whitening,
)

N, D, PLANTED = 4000, 32, 20


def _planted():
    """Isotropic tokens, and 20 of them pushed far along one direction (a 'massive' token
    kind, as in layers 2, 3 and 9 of the default model)."""
    gen = torch.Generator().manual_seed(0)
    x_ND = torch.randn(N, D, generator=gen)
    u_D = torch.randn(D, generator=gen)
    planted = torch.randperm(N, generator=gen)[:PLANTED]
    x_ND[planted] += 40 * u_D / u_D.norm()
    return x_ND, planted


def _planted_share(acts_NF, planted):
    """Per direction: the share of its firings (top 0.5% tokens) that are planted tokens."""
    top_FM = topq_tokens(acts_NF, PLANTED / N)
    return torch.isin(top_FM, planted).float().mean(dim=1)


def _acts(kind, x_ND, centre_D, n_dirs, seed=1):
    x = x_ND - centre_D
    return x @ control_directions(kind, x, n_dirs, seed)


def _sae_like(n_features=300, seed=0):
    """Firings of a made-up SAE: feature f fires on a random set of tokens, supports from 0
    (dead) to a few hundred, heavy-tailed as real ones are."""
    gen = torch.Generator().manual_seed(seed)
    support_F = (torch.rand(n_features, generator=gen) ** 3 * 400).long()
    support_F[:7] = 0
    feats = torch.repeat_interleave(torch.arange(n_features), support_F)
    toks = torch.cat([torch.randperm(N, generator=gen)[:s] for s in support_F.tolist()])
    return feats, toks, support_F


def test_a_matched_control_has_the_support_histogram_of_its_sae_features():
    x_ND, _ = _planted()
    feats, toks, support_F = _sae_like()
    idx_NK = torch.full((N, 64), -1)
    valid_NK = torch.zeros(N, 64, dtype=torch.bool)
    slot = torch.zeros(N, dtype=torch.long)
    for f, t in zip(feats.tolist(), toks.tolist(), strict=True):  # pack into TopK-like rows
        idx_NK[t, slot[t]], valid_NK[t, slot[t]] = f, True
        slot[t] += 1
    sae = sae_firings(idx_NK, valid_NK)
    assert torch.equal(torch.bincount(sae.feat_P, minlength=300), support_F)
    controls = control_firings(x_ND, torch.randn(D), sae, 300, seed=4)
    want = torch.bincount(support_F)
    for kind in DIRECTION_KINDS:
        got_F = torch.bincount(controls[kind].feat_P, minlength=300)
        assert torch.equal(torch.bincount(got_F, minlength=len(want)), want), kind
        # each direction fires on distinct tokens, its own top ones
        pairs = controls[kind].feat_P * N + controls[kind].tok_P
        assert len(pairs.unique()) == len(pairs)
    # paired one to one: direction j takes the support of SAE feature order[j]
    paired = matched_supports(support_F, 300, seed=4)
    assert torch.equal(torch.bincount(controls["random"].feat_P, minlength=300), paired)


def test_a_matched_direction_fires_on_its_own_top_tokens():
    x_ND, _ = _planted()
    support_F = torch.tensor([5, 0, 40, 12])
    got = matched_firings("random", x_ND, torch.zeros(D), support_F, seed=2)
    want_J = matched_supports(support_F, 4, seed=2)
    acts_NJ = _acts("random", x_ND, torch.zeros(D), 4, seed=2)
    for j in range(4):
        mine = got.tok_P[got.feat_P == j].sort().values
        top = acts_NJ[:, j].topk(int(want_J[j])).indices.sort().values
        assert torch.equal(mine, top)


@pytest.mark.parametrize("k", [1, 8, 32])
def test_the_topk_random_dictionary_fires_k_features_on_every_token(k):
    x_ND, _ = _planted()
    width = 256
    got = topk_dictionary_firings(x_ND, torch.randn(D), width, k, seed=0)
    assert torch.equal(torch.bincount(got.tok_P, minlength=N), torch.full((N,), k))
    assert int(got.feat_P.max()) < width
    assert len((got.tok_P * width + got.feat_P).unique()) == N * k  # k distinct per token
    sae = sae_firings(torch.arange(k).expand(N, k), torch.ones(N, k, dtype=torch.bool))
    assert torch.equal(torch.bincount(control_firings(x_ND, torch.zeros(D), sae, width, seed=0)
                                      ["topk_random"].tok_P, minlength=N), torch.full((N,), k))


def test_centring_leaves_every_control_firing_where_it_did():
    x_ND, _ = _planted()
    centre_D = torch.randn(D) * 5
    for kind in DIRECTION_KINDS:
        a = topq_tokens(_acts(kind, x_ND, centre_D, 48), 0.01).sort(dim=1).values
        b = topq_tokens(_acts(kind, x_ND, torch.zeros(D), 48), 0.01).sort(dim=1).values
        assert torch.equal(a, b), kind


def test_neuron_directions_are_each_dimension_and_its_negative_cycled():
    x_ND, _ = _planted()
    acts = _acts("neuron", x_ND, torch.zeros(D), 3 * D)
    assert torch.equal(acts[:, :D], x_ND) and torch.equal(acts[:, D:2 * D], -x_ND)
    assert torch.equal(acts[:, 2 * D:], x_ND)


def test_whitened_directions_no_longer_lock_onto_high_norm_tokens():
    x_ND, planted = _planted()
    raw, whitened = (_planted_share(_acts(k, x_ND, torch.zeros(D), 64), planted)
                     for k in ("random", "whitened"))
    locked_raw, locked_white = int((raw >= 0.8).sum()), int((whitened >= 0.8).sum())
    assert locked_raw >= 16  # about a third of random directions fire mostly on them
    assert locked_white <= locked_raw // 4
    assert float(whitened.mean()) < float(raw.mean()) / 2


def test_whitening_gives_identity_covariance():
    x_ND, _ = _planted()
    x_ND = x_ND @ torch.randn(D, D, generator=torch.Generator().manual_seed(2))
    mean_D, w_DD = whitening(x_ND)
    z = (x_ND.double() - mean_D) @ w_DD
    cov = z.T @ z / (N - 1)
    assert torch.allclose(cov, torch.eye(D, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(mean_D, x_ND.double().mean(0))
