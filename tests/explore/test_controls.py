"""The layer map's controls: centring cannot move a top set; whitening stops random
directions from all firing on the same few high-norm tokens."""

import torch

from sae_core.explore.consistency import topq_tokens
from sae_core.explore.controls import control_activations, whitening

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


def test_centring_leaves_every_control_firing_where_it_did():
    x_ND, _ = _planted()
    centre_D = torch.randn(D) * 5
    centred = control_activations(x_ND, centre_D, 48, seed=1)
    raw = control_activations(x_ND, torch.zeros(D), 48, seed=1)
    for kind in centred:
        a = topq_tokens(centred[kind], 0.01).sort(dim=1).values
        b = topq_tokens(raw[kind], 0.01).sort(dim=1).values
        assert torch.equal(a, b), kind


def test_whitened_directions_no_longer_lock_onto_high_norm_tokens():
    x_ND, planted = _planted()
    acts = control_activations(x_ND, torch.zeros(D), 64, seed=1)
    raw, whitened = (_planted_share(acts[k], planted) for k in ("random", "whitened"))
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
