import pytest
import torch

from sae_core.config import SaeConfig
from sae_core.sae import Sae
from sae_core.train.topk_grad import topk_step_grads


def _autograd_loss(sae: Sae, x, k, dead, alpha):
    """The same loss as topk_step_grads, written plainly for autograd."""
    pre = sae.pre_acts(x)
    vals, idx = pre.topk(k, dim=-1)
    x_hat = sae.decode_sparse(vals.clamp_min(0), idx)
    total_var = (x - x.mean(0)).pow(2).sum()
    loss = (x_hat - x).pow(2).sum() / total_var
    if dead is not None and dead.any():
        n_dead, half = int(dead.sum()), x.shape[1] // 2
        a_vals, a_j = pre[:, dead].topk(min(half, n_dead), dim=-1)
        a_idx = dead.nonzero().squeeze(1)[a_j]
        resid = (x - x_hat).detach()
        e_hat = torch.nn.functional.embedding_bag(
            a_idx, sae.W_dec, per_sample_weights=a_vals.clamp_min(0), mode="sum")
        resid_var = (resid - resid.mean(0)).pow(2).sum()
        loss = loss + alpha * min(n_dead / half, 1.0) * (e_hat - resid).pow(2).sum() / resid_var
    return loss


def _make(seed=0, d=16, n=64):
    torch.manual_seed(seed)
    x = torch.randn(200, d) * 3 + 1
    sae = Sae.init_from_data(SaeConfig(d_in=d, d_sae=n, k=4), x, seed=seed)
    with torch.no_grad():  # move away from the symmetric init so every path has gradient
        sae.b_enc.normal_(0, 0.1)
        sae.W_enc.add_(torch.randn(d, n) * 0.1)
    return sae, x


def test_grads_match_autograd_without_dead_latents():
    sae, x = _make()
    stats = topk_step_grads(sae, x, 4, bf16=False)
    got = {name: p.grad.clone() for name, p in sae.named_parameters()}
    sae.zero_grad(set_to_none=True)
    loss = _autograd_loss(sae, x, 4, None, 0.0)
    loss.backward()
    assert abs(stats.fvu - loss.item()) < 1e-5
    for name, p in sae.named_parameters():
        torch.testing.assert_close(got[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("n_dead", [20, 8, 3])  # more than d_in / 2 = 8: a top-k of them
def test_grads_match_autograd_with_auxk(n_dead):
    sae, x = _make(seed=1)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[torch.randperm(64)[:n_dead]] = True
    stats = topk_step_grads(sae, x, 4, dead=dead, auxk_alpha=0.5, bf16=False)
    got = {name: p.grad.clone() for name, p in sae.named_parameters()}
    sae.zero_grad(set_to_none=True)
    _autograd_loss(sae, x, 4, dead, 0.5).backward()
    assert stats.auxk > 0
    for name, p in sae.named_parameters():
        torch.testing.assert_close(got[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_fired_marks_exactly_the_selected_latents():
    sae, x = _make(seed=2)
    stats = topk_step_grads(sae, x, 4, bf16=False)
    _, idx = sae.encode_topk(x)
    expected = torch.zeros(64, dtype=torch.bool)
    expected[idx.reshape(-1)] = True
    assert torch.equal(stats.fired, expected)
