"""The one bootstrap: planted truths (a constant, a difference, no difference) and the
weights form drawing the same resamples as the list form."""

import random
import statistics

import pytest
import torch

from sae_core.stats import (
    bootstrap_interval,
    group_weights,
    percentile_interval,
    resample_groups,
    share_interval,
)


def _mean(groups):
    return statistics.fmean(x for g in groups for x in g)


def test_a_planted_constant_gives_a_point_interval():
    groups = [[0.3] * n for n in (1, 4, 9, 2)]
    found = bootstrap_interval(groups, _mean, n_boot=200)
    assert found.point == found.lo == found.hi == pytest.approx(0.3)


def test_a_planted_difference_excludes_zero():
    rng = random.Random(1)
    groups = [(1.0 + rng.gauss(0, 1), rng.gauss(0, 1)) for _ in range(60)]

    def difference(draw):
        return statistics.fmean(a for a, _ in draw) - statistics.fmean(b for _, b in draw)

    found = bootstrap_interval(groups, difference, n_boot=500, seed=3)
    assert 0.0 < found.lo < found.point < found.hi
    assert found.lo < 1.0 < found.hi


def test_a_null_difference_is_covered_about_95_percent_of_the_time():
    """200 simulated data sets with no difference: the 95% interval covers 0 in about 95%
    of them (a cheap coverage check; the percentile bootstrap runs slightly narrow at 40
    groups, so 88-99% passes)."""
    gen = torch.Generator().manual_seed(0)
    covered = 0
    for trial in range(200):
        d_G = torch.randn(40, generator=gen, dtype=torch.float64)  # per-group differences
        w_BG = group_weights(40, n_boot=400, seed=trial)
        lo, hi = percentile_interval(w_BG @ d_G / 40)
        covered += lo <= 0.0 <= hi
    assert 0.88 <= covered / 200 <= 0.99


def test_weights_count_the_same_draws_as_the_lists():
    draws = resample_groups(7, n_boot=5, seed=2)
    w_BG = group_weights(7, n_boot=5, seed=2)
    assert w_BG.shape == (5, 7) and (w_BG.sum(1) == 7).all()
    for row, d in zip(w_BG.tolist(), draws, strict=True):
        assert row == [d.count(g) for g in range(7)]
    values = [1.0, 5.0, 2.0, 8.0, 3.0, 0.5, 4.0]
    by_list = bootstrap_interval(values, statistics.fmean, n_boot=5, seed=2)
    by_weights = percentile_interval(w_BG @ torch.tensor(values, dtype=torch.float64) / 7)
    assert (by_list.lo, by_list.hi) == pytest.approx(by_weights)


def test_percentile_interval_drops_undefined_draws_and_checks_its_level():
    assert percentile_interval([float("nan"), 1.0, 2.0, 3.0], level=0.5) == (1.0, 2.0)
    nan_lo, nan_hi = percentile_interval([float("nan")])
    assert nan_lo != nan_lo and nan_hi != nan_hi
    with pytest.raises(ValueError):
        percentile_interval([1.0], level=1.0)
    with pytest.raises(ValueError):
        resample_groups(0, n_boot=3)


def test_a_share_of_items_has_a_point_interval_at_the_ends_and_the_resampled_width_between():
    assert share_interval(50, 50) == (1.0, 1.0) and share_interval(0, 50) == (0.0, 0.0)
    lo, hi = share_interval(20, 100)
    # the same items drawn again by the library's bootstrap: the same interval, +- a draw's
    # Monte Carlo error
    w_BG = group_weights(100, n_boot=4000, seed=1)
    mc_lo, mc_hi = percentile_interval(w_BG[:, :20].sum(1) / 100)
    assert (lo, hi) == pytest.approx((mc_lo, mc_hi), abs=0.011)
    lo, hi = share_interval(2000, 4000)
    # the normal approximation: 0.5 +- 1.96 * sqrt(0.25 / 4000) = 0.5 +- 0.0155
    assert lo < 0.5 < hi and hi - lo == pytest.approx(0.031, abs=0.002)
    nan_lo, _ = share_interval(0, 0)
    assert nan_lo != nan_lo
    with pytest.raises(ValueError):
        share_interval(5, 4)
