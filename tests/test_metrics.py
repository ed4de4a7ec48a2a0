import pytest
import torch

from sae_core import metrics


def test_fvu_known_values():
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])  # mean 0, total var 10
    assert metrics.fvu(x, x) == 0
    assert metrics.fvu(x, torch.zeros_like(x)) == pytest.approx(1.0)
    assert metrics.fvu(x, x * 0.5) == pytest.approx(0.25)


def test_dead_fraction():
    acts = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 3.0]])
    assert metrics.dead_fraction((acts != 0).sum(0)) == pytest.approx(1 / 3)


def test_ce_recovered():
    assert metrics.ce_loss_recovered(clean=2.0, spliced=2.0, ablated=10.0) == 1.0
    assert metrics.ce_loss_recovered(clean=2.0, spliced=10.0, ablated=10.0) == 0.0
    assert metrics.ce_loss_recovered(clean=2.0, spliced=4.0, ablated=10.0) == 0.75


def test_running_fvu_equals_batch_fvu():
    torch.manual_seed(0)
    x = torch.randn(100, 8) * 3 + 2
    x_hat = x + torch.randn(100, 8)
    acts = torch.relu(torch.randn(100, 16))
    run = metrics.RunningFvu()
    for chunk in range(0, 100, 30):
        run.update(x[chunk:chunk + 30], x_hat[chunk:chunk + 30], acts[chunk:chunk + 30])
    assert run.fvu() == pytest.approx(float(metrics.fvu(x.double(), x_hat.double())), rel=1e-9)
    assert run.l0() == pytest.approx(float((acts != 0).sum() / len(acts)))


def test_cross_entropy_of_perfect_prediction_is_small():
    ids = torch.tensor([[1, 2, 3]])
    logits = torch.full((1, 3, 5), -20.0)
    logits[0, 0, 2] = logits[0, 1, 3] = 20.0
    assert metrics.cross_entropy(logits, ids) < 1e-6
