"""The step's sparse kernels against plain torch: top-k with ascending indices and ties to
the lowest index (the set a stable descending sort keeps), and the pairs' order by latent."""

import subprocess
import sys
from pathlib import Path

import numba  # noqa: F401  (pinned in requirements.txt: missing, these fail, not skip)
import pytest
import torch

from sae_core import topk
from sae_core.config import SaeConfig, TrainConfig
from sae_core.sae import Sae
from sae_core.topk import topk_sorted
from sae_core.train import sparse_kernels
from sae_core.train.sparse_kernels import decode_and_dots, latent_grads, latent_order
from sae_core.train.trainer import SaeTrainer

ROOT = Path(__file__).resolve().parents[2]


def _reference(pre, k):
    """(vals, idx) of a stable descending sort's first k, idx ascending."""
    idx = pre.float().sort(dim=1, descending=True, stable=True).indices[:, :k].sort(dim=1).values
    return pre.gather(1, idx), idx


def _check(pre, k):
    vals, idx = topk_sorted(pre, k)
    ref_vals, ref_idx = _reference(pre, k)
    assert vals.dtype == pre.dtype and idx.dtype == torch.long
    assert torch.equal(idx, ref_idx)
    assert torch.equal(vals, ref_vals)
    # the values are torch.topk's, as multisets
    top = pre.topk(k, dim=1).values.float().sort(dim=1).values
    assert torch.equal(vals.float().sort(dim=1).values, top)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize(("n", "width", "k"), [
    (300, 4608, 32), (7, 1000, 5), (200, 37, 3), (50, 100, 1), (40, 64, 64), (9, 10, 4),
    (130, 501, 40),
])
def test_equals_stable_sort_on_random_rows(dtype, n, width, k):
    gen = torch.Generator().manual_seed(width * 7 + k)
    _check(torch.randn(n, width, generator=gen).to(dtype), k)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize(("width", "k"), [(4608, 32), (333, 17), (48, 48)])
def test_ties_go_to_the_lowest_index(dtype, width, k):
    gen = torch.Generator().manual_seed(k)
    _check(torch.randint(-3, 4, (150, width), generator=gen).to(dtype), k)  # heavy ties


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_rows_with_few_positive_values_and_signed_zeros(dtype):
    gen = torch.Generator().manual_seed(3)
    pre = -torch.rand(140, 700, generator=gen) - 0.5
    pre[:, ::50] = 0.0
    pre[:, 25::50] = -0.0  # -0.0 == +0.0: ties, the lowest index first
    pre[::2, 3] = 2.0
    pre[:, -1] = float("-inf")
    _check(pre.to(dtype), 20)
    assert (topk_sorted(pre.to(dtype), 20)[1][1::2] % 25 == 0).all()  # 20 of the 28 zeros


def test_the_torch_path_keeps_the_same_contract(monkeypatch):
    monkeypatch.setattr(topk, "numba", None)
    pre = torch.randn(64, 300, generator=torch.Generator().manual_seed(1))
    _check(pre, 20)  # tie-free: torch.topk's set is the stable sort's
    with pytest.raises(ValueError):
        topk_sorted(pre, 301)


@pytest.mark.parametrize("n_latents", [50, 4608])
def test_latent_order_is_a_stable_sort(n_latents):
    idx = torch.randint(0, n_latents, (500, 8), generator=torch.Generator().manual_seed(0))
    order, counts = latent_order(idx, n_latents)
    assert torch.equal(order, idx.reshape(-1).argsort(stable=True))
    assert torch.equal(counts, torch.bincount(idx.reshape(-1), minlength=n_latents))


def _trained(steps, x):
    cfg = TrainConfig(k=8, lr=3e-3, batch_tokens=256, bf16=False, dead_tokens=300)
    sae = Sae.init_from_data(SaeConfig(d_in=32, d_sae=256, k=8), x[:256], seed=0,
                             encoder_scale=cfg.encoder_scale())
    trainer = SaeTrainer(sae, cfg, steps)
    fvus = [trainer.step(x[i * 256:(i + 1) * 256]) for i in range(steps)]
    return fvus, sae


def test_training_steps_equal_the_torch_topk_path(monkeypatch):
    """fp32 pre-activations of random data have no ties, so both top-k paths pick the same
    latents; every step then computes the same numbers (AuxK on: dead_tokens is small)."""
    x = torch.randn(6 * 256, 32, generator=torch.Generator().manual_seed(5)) * 2 + 0.5
    fvus, sae = _trained(6, x)
    monkeypatch.setattr(topk, "_kernel_applies", lambda pre: False)
    ref_fvus, ref = _trained(6, x)
    assert fvus == ref_fvus
    for (name, p), q in zip(sae.named_parameters(), ref.parameters(), strict=True):
        assert torch.equal(p, q), name


def test_training_steps_match_the_torch_path_within_fp32(monkeypatch):
    """Without numba (embedding_bag, sampled matmul, argsort): the same training, up to the
    kernels' fp32 summation order."""
    x = torch.randn(6 * 256, 32, generator=torch.Generator().manual_seed(6)) * 2 + 0.5
    fvus, sae = _trained(6, x)
    monkeypatch.setattr(sparse_kernels, "numba", None)
    monkeypatch.setattr(topk, "numba", None)
    ref_fvus, ref = _trained(6, x)
    assert fvus == pytest.approx(ref_fvus, rel=1e-5)
    for (name, p), q in zip(sae.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)


def test_decode_and_dots_equals_bag_and_sampled_matmul(monkeypatch):
    gen = torch.Generator().manual_seed(2)
    W = torch.randn(300, 40, generator=gen)
    xc = torch.randn(150, 40, generator=gen)
    idx = torch.stack([torch.randperm(300, generator=gen)[:9] for _ in range(150)]).sort(1).values
    vals = torch.randn(150, 9, generator=gen).clamp_min(0)  # about half are 0
    coeff = torch.tensor(0.37)
    got = decode_and_dots(idx, vals, W, xc, coeff)
    dense = torch.zeros(150, 300).scatter_(1, idx, vals)
    err = dense @ W - xc
    grad_vals = ((err * coeff) @ W.T).gather(1, idx) * (vals > 0)
    for a, b in zip(got, (err, err * coeff, grad_vals), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(sparse_kernels, "numba", None)
    for a, b in zip(decode_and_dots(idx, vals, W, xc, coeff), got, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_imports_and_runs_where_numba_cannot_cache():
    """Read-only installs: with no writable cache location numba raises at decoration;
    the kernels then compile in memory."""
    code = (
        "import numba.core.caching as c\n"
        "c.CacheImpl._locator_classes = []\n"
        "import torch\n"
        "from sae_core.topk import topk_sorted\n"
        "pre = torch.randn(20, 100, generator=torch.Generator().manual_seed(0))\n"
        "ref = pre.sort(dim=1, descending=True, stable=True).indices[:, :7].sort(dim=1).values\n"
        "print(torch.equal(topk_sorted(pre, 7)[1], ref))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_latent_grads_equal_dense_products(monkeypatch):
    gen = torch.Generator().manual_seed(4)
    n, width, k, d = 120, 70, 6, 24
    idx = torch.stack([torch.randperm(width, generator=gen)[:k] for _ in range(n)]).sort(1).values
    vals = torch.randn(n, k, generator=gen).clamp_min(0)
    grad_vals = torch.randn(n, k, generator=gen) * (vals > 0)
    grad_out, xc = torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen)
    code = torch.zeros(n, width).scatter_(1, idx, vals)
    grad_code = torch.zeros(n, width).scatter_(1, idx, grad_vals)
    want = (code.T @ grad_out, grad_code.T @ xc, grad_code.sum(0))
    for module in (sparse_kernels.numba, None):  # counting sort, then argsort
        monkeypatch.setattr(sparse_kernels, "numba", module)
        order, counts = latent_order(idx, width)
        got = latent_grads(order, counts, vals, grad_vals, grad_out, xc)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
