import math

import numpy as np
import pytest
import torch

from sae_core.explore.consistency import (
    base_rates,
    feature_stats,
    label_counts,
    label_counts_dense,
    layer_map,
    random_directions,
    topq_tokens,
)

# 4 tokens, each fires k=2 of 4 features; 4 labels, label 3 never occurs; feature 3 is dead.
FIRE_IDX = torch.tensor([[0, 1], [0, 2], [1, 2], [0, 1]])
LABELS = torch.tensor([0, 0, 1, 2])
EXPECTED = torch.tensor([
    [2, 0, 1, 0],  # feature 0 fires on tokens 0, 1, 3
    [1, 1, 1, 0],  # feature 1 on 0, 2, 3: a three-way tie
    [1, 1, 0, 0],  # feature 2 on 1, 2: a two-way tie
    [0, 0, 0, 0],  # feature 3 never fires
])


def dense_mask(fire_idx_NK: torch.Tensor, n_features: int) -> torch.Tensor:
    fires = torch.zeros(len(fire_idx_NK), n_features, dtype=torch.bool)
    return fires.scatter_(1, fire_idx_NK, True)


def test_topk_counts_are_exact():
    assert torch.equal(label_counts(FIRE_IDX, LABELS, 4, 4), EXPECTED)


def test_numpy_inputs_and_int16_labels():
    counts = label_counts(FIRE_IDX.numpy(), LABELS.numpy().astype(np.int16), 4, 4)
    assert torch.equal(counts, EXPECTED)


def test_dense_counts_equal_topk_counts_for_same_firings():
    assert torch.equal(label_counts_dense(dense_mask(FIRE_IDX, 4), LABELS, 4), EXPECTED)
    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(500, 64, generator=gen)
    idx = acts.topk(8, dim=1).indices
    labels = torch.randint(0, 7, (500,), generator=gen)
    topk = label_counts(idx, labels, 64, 7)
    assert torch.equal(topk, label_counts_dense(dense_mask(idx, 64), labels, 7))
    assert int(topk.sum()) == 500 * 8


def test_valid_mask_drops_slots_that_did_not_fire():
    valid = torch.tensor([[True, False], [True, True], [True, True], [False, True]])
    counts = label_counts(FIRE_IDX, LABELS, 4, 4, valid_NK=valid)
    # token 0 loses feature 1, token 3 loses feature 0
    assert torch.equal(counts[0], torch.tensor([2, 0, 0, 0]))
    assert torch.equal(counts[1], torch.tensor([0, 1, 1, 0]))
    assert int(counts.sum()) == 6


def test_counts_add_over_batches():
    halves = label_counts(FIRE_IDX[:2], LABELS[:2], 4, 4) + label_counts(
        FIRE_IDX[2:], LABELS[2:], 4, 4)
    assert torch.equal(halves, EXPECTED)


def test_out_of_range_ids_raise():
    with pytest.raises(ValueError, match="feature ids"):
        label_counts(FIRE_IDX, LABELS, 2, 4)
    with pytest.raises(ValueError, match="label ids"):
        label_counts(FIRE_IDX, LABELS, 4, 2)


def test_base_rates_include_absent_labels():
    assert base_rates(LABELS, 4).tolist() == [0.5, 0.25, 0.25, 0.0]


def test_feature_stats_ties_and_dead_features():
    stats = feature_stats(EXPECTED, base_rates(LABELS, 4))
    assert stats.label.tolist() == [0, 0, 0, -1]  # ties -> lowest label id; dead -> -1
    assert stats.support.tolist() == [3, 3, 2, 0]
    assert stats.consistency[:3].tolist() == pytest.approx([2 / 3, 1 / 3, 1 / 2])
    assert math.isnan(stats.consistency[3])
    assert stats.lift[:3].tolist() == pytest.approx([4 / 3, 2 / 3, 1.0])
    assert math.isnan(stats.lift[3])


def test_tie_goes_to_lowest_id_even_when_not_first_column():
    counts = torch.tensor([[0, 3, 1, 3], [1, 0, 0, 1], [0, 0, 5, 5]])
    assert feature_stats(counts, torch.full((4,), 0.25)).label.tolist() == [1, 0, 2]


def test_label_absent_from_base_rate_tokens_gives_infinite_lift():
    counts = torch.tensor([[0, 4], [3, 1]])
    stats = feature_stats(counts, torch.tensor([1.0, 0.0]))
    assert stats.label.tolist() == [1, 0]
    assert math.isinf(stats.lift[0]) and stats.lift[0] > 0
    assert stats.lift[1] == pytest.approx(0.75)


def test_layer_map_thresholds_and_share():
    stats = feature_stats(EXPECTED, base_rates(LABELS, 4))
    lm = layer_map(stats, threshold=0.5, min_support=2, n_labels=4)
    assert lm.n_accepted.tolist() == [2, 0, 0, 0]  # features 0 (2/3) and 2 (exactly 1/2)
    assert lm.share_accepted == pytest.approx(2 / 4)  # the dead feature counts as a feature
    assert lm.n_eligible == 3
    strict = layer_map(stats, threshold=0.5, min_support=3, n_labels=4)
    assert strict.n_accepted.tolist() == [1, 0, 0, 0] and strict.n_eligible == 2
    # min_support 0 must still never accept a dead feature (its consistency is NaN)
    assert layer_map(stats, threshold=0.0, min_support=0, n_labels=4).n_accepted.sum() == 3


def test_layer_map_counts_per_label():
    counts = torch.tensor([[9, 1, 0], [0, 10, 0], [0, 8, 2], [0, 0, 0], [5, 5, 0]])
    stats = feature_stats(counts, torch.tensor([0.5, 0.4, 0.1]))
    lm = layer_map(stats, threshold=0.8, min_support=5, n_labels=3)
    assert lm.n_accepted.tolist() == [1, 2, 0]
    assert lm.share_accepted == pytest.approx(3 / 5)


def test_topq_tokens_are_exactly_the_top_tokens():
    acts = torch.tensor([
        [0.0, 5.0, 1.0],
        [3.0, 4.0, 1.0],
        [1.0, 3.0, 1.0],
        [2.0, 2.0, 1.0],
        [4.0, 1.0, 1.0],
        [-1.0, 0.0, 1.0],
        [5.0, -1.0, 1.0],
        [0.5, -2.0, 1.0],
    ])
    top = topq_tokens(acts, 0.25)  # 2 of 8 tokens per column
    assert sorted(top[0].tolist()) == [4, 6] and sorted(top[1].tolist()) == [0, 1]
    assert top.shape == (3, 2)  # a constant column still fires exactly twice
    assert topq_tokens(acts, 0.0).shape == (3, 0)
    assert all(sorted(row) == list(range(8)) for row in topq_tokens(acts, 1.0).tolist())
    with pytest.raises(ValueError):
        topq_tokens(acts, 1.5)


def test_topq_counts_match_rate_on_random_acts():
    acts = torch.randn(1000, 40, generator=torch.Generator().manual_seed(1))
    top = topq_tokens(acts, 32 / 4608)
    assert top.shape == (40, 7)  # round(1000 * 0.00694) = 7
    threshold = acts.topk(7, dim=0).values[-1]
    fires = torch.zeros_like(acts, dtype=torch.bool).scatter_(0, top.T, True)
    assert torch.equal(fires, acts >= threshold)  # no ties in continuous data


def test_random_directions_are_unit_reproducible_and_spread():
    dirs = random_directions(576, 300, seed=3)
    assert dirs.shape == (300, 576) and dirs.dtype == torch.float32
    assert torch.allclose(dirs.norm(dim=1), torch.ones(300), atol=1e-5)
    assert torch.equal(dirs, random_directions(576, 300, seed=3))
    assert not torch.equal(dirs, random_directions(576, 300, seed=4))
    cos = dirs @ dirs.T - torch.eye(300)
    assert cos.abs().max() < 0.3  # random in 576 dims: |cos| ~ 0.04 +- a few sigma
    assert dirs.mean(0).norm() < 0.15  # no preferred direction (~1/sqrt(300) = 0.06)


def test_topq_label_counts_equal_the_dense_path():
    from sae_core.explore.consistency import label_counts_topq, topq_tokens

    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(500, 12, generator=gen)
    labels = torch.randint(0, 4, (500,), generator=gen)
    fires = acts >= acts.topk(25, dim=0).values[-1]  # no ties in continuous data
    dense = label_counts_dense(fires, labels, 4)
    top = topq_tokens(acts, 0.05)
    assert top.shape == (12, 25)
    assert torch.equal(label_counts_topq(top, labels, 4), dense)
