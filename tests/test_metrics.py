import math
import statistics

import numpy as np
import pytest
import torch

from sae_core import metrics
from tests.counts import count


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


def test_mean_and_se_is_the_sample_error_of_the_mean():
    values = [0.3, 0.1, 0.4, 0.15, 0.9, 0.26]
    mean, se = metrics.mean_and_se(torch.tensor(values))
    assert mean == pytest.approx(statistics.fmean(values))
    assert se == pytest.approx(statistics.stdev(values) / math.sqrt(len(values)))
    assert math.isnan(metrics.mean_and_se(torch.tensor([0.5]))[1])


def _delta_by_covariance(num, den):
    """Brute force: gradient of mean(num)/mean(den) times the sample covariance of the
    window means, g' (S / n) g, written out from numpy's covariance matrix."""
    a, b = np.mean(num), np.mean(den)
    grad = np.array([1 / b, -a / b**2])
    cov = np.cov(np.stack([num, den]), ddof=1) / len(num)
    return a / b, math.sqrt(grad @ cov @ grad)


def test_ratio_se_equals_the_delta_method_written_out():
    rng = np.random.default_rng(0)
    for n in (2, 5, 32, 200):
        den = rng.uniform(5, 12, n)
        num = 0.9 * den + rng.normal(0, 0.4, n)
        ratio, se = metrics.ratio_and_se(torch.tensor(num), torch.tensor(den))
        want_ratio, want_se = _delta_by_covariance(num, den)
        assert ratio == pytest.approx(want_ratio, rel=1e-12)
        assert se == pytest.approx(want_se, rel=1e-9)
    count("planted ratio sets checked against the written-out delta method", 4)


def test_ratio_se_matches_the_spread_of_repeated_samples():
    """Planted truth: draw 32 windows 4,000 times; the standard deviation of the ratios is
    what the error of one draw claims to estimate."""
    rng = np.random.default_rng(1)
    ratios, errors = [], []
    for _ in range(4000):
        den = rng.gamma(8.0, 1.0, 32)  # loss gaps of different genres
        num = 0.9 * den + rng.normal(0, 0.5, 32) * np.sqrt(den)
        r, se = metrics.ratio_and_se(torch.tensor(num), torch.tensor(den))
        ratios.append(r)
        errors.append(se)
    assert np.mean(errors) == pytest.approx(np.std(ratios), rel=0.08)


def test_ratio_and_se_edge_cases():
    assert all(math.isnan(v) for v in metrics.ratio_and_se(torch.ones(3), torch.zeros(3)))
    ratio, se = metrics.ratio_and_se(torch.tensor([3.0]), torch.tensor([4.0]))
    assert ratio == 0.75 and math.isnan(se)
    ratio, se = metrics.ratio_and_se(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4, 6]))
    assert ratio == 0.5 and se == 0  # every window has the same ratio


@pytest.mark.parametrize(("value", "se", "shown"), [
    (0.8712, 0.0213, "0.87 ± 0.02"),  # the brief's example
    (0.8712, 0.0143, "0.871 ± 0.014"),  # the error starts with 1: two digits
    (0.8712, 0.0096, "0.871 ± 0.010"),  # rounds up to 0.010: still two digits of it
    (0.5, 0.3, "0.5 ± 0.3"),  # 0.3 is 2.999...e-01 in binary, one digit
    (0.5, 0.1, "0.50 ± 0.10"),
    (0.00123, 0.00047, "0.0012 ± 0.0005"),
    (-0.05, 0.0199, "-0.050 ± 0.020"),
    (-0.0001, 0.03, "0.00 ± 0.03"),  # no "-0.00"
    (1234.5, 23, "1230 ± 20"),  # errors above 1 round the value to tens
    (1234.5, 1.4, "1234.5 ± 1.4"),
    (0.87, 0.0, "0.870 ± 0"),
    (0.9626, None, "0.963"),  # old metrics.json: no error, 3 decimals at most
    (0.9626, math.nan, "0.963"),  # one window: no error
    (0.5, None, "0.500"),
    (math.nan, 0.1, "n/a"),
    (None, None, "n/a"),  # an old metrics.json without KL
])
def test_format_with_error(value, se, shown):
    assert metrics.format_with_error(value, se) == shown
