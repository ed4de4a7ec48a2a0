"""k-sparse probing on hand-built firings: planted latents and labels are found, the
selection and scores match direct computations, the stored result reads back."""

import itertools

import pytest
import torch

from sae_core.atomic import CorruptFile
from sae_core.config import SaeConfig
from sae_core.explore.firings import LayerFirings
from sae_core.explore.probing import (
    PROBING_FILE,
    ProbingResult,
    compute_probing,
    eligible_labels,
    probe_layer,
    read_probing,
)
from sae_core.explore.probing_fit import (
    L2,
    auroc,
    balanced_accuracy,
    class_weights,
    f1_scores,
    fit_dense,
    fit_sparse,
    mean_diff_dense,
    mean_diff_sparse,
    top_columns,
)
from sae_core.sae import Sae
from tests.conftest import save_as_atlas

N, D, D_SAE, K = 1600, 8, 24, 4
VOCAB = {"pos": ["A", "B", "C", "sep"], "dep": ["A", "B", "C", "sep"]}


def _firings(labels_N, planted=None, x_ND=None, seed=0):
    """K random latents per token (ids >= 1, random values); latent 0 fires with value
    1-2 exactly where `planted` is True."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.stack([torch.randperm(D_SAE - 1, generator=gen)[:K] + 1 for _ in range(N)])
    vals = torch.rand(N, K, generator=gen) + 0.1
    if planted is not None:
        idx = torch.cat([idx, torch.zeros(N, 1, dtype=torch.long)], 1)
        vals = torch.cat([vals, (1 + torch.rand(N, 1, generator=gen)) * planted[:, None]], 1)
    if x_ND is None:
        x_ND = torch.randn(N, D, generator=gen)
    labels = labels_N if isinstance(labels_N, dict) else {"pos": labels_N}
    return LayerFirings(x_ND.bfloat16(), labels, idx, vals > 0, D_SAE, vals,
                        torch.zeros(N, dtype=torch.long), torch.arange(N),
                        torch.arange(N) % 2 == 1)


def _labels(rates, seed=1):
    """Label ids drawn independently of everything else with the given rates."""
    gen = torch.Generator().manual_seed(seed)
    return torch.multinomial(torch.tensor(rates), N, replacement=True, generator=gen)


def test_a_planted_latent_is_chosen_and_an_unrelated_label_is_chance():
    pos, dep = _labels([0.2, 0.3, 0.5]), _labels([0.3, 0.2, 0.5], seed=7)
    result = probe_layer(_firings({"pos": pos, "dep": dep}, planted=pos == 0), VOCAB)[0]
    planted, unrelated = result["pos"], result["dep"]
    assert planted.labels == ["A", "B"]  # C is half the tokens: above the base-rate maximum
    assert planted.latents[0][0] == 0
    assert planted.f1["sae@1"][0] > 0.95 and planted.auroc["sae@1"][0] > 0.99
    assert planted.bacc["sae@1"][0] > 0.95 and set(planted.bacc) == set(planted.f1)
    assert planted.support == [int((pos[1::2] == i).sum()) for i in (0, 1)]
    # dep depends on nothing: every probe, even with 20 latents or all dims, is at chance
    assert unrelated.labels == ["A", "B"]
    for method in ("sae@1", "sae@20", "neuron@5", "dense"):
        for i, rate in enumerate((0.3, 0.2)):
            assert abs(unrelated.auroc[method][i] - 0.5) < 0.08, method
            chance = 2 * rate * 0.5 / (rate + 0.5)  # F1 of predicting half the tokens
            assert unrelated.f1[method][i] < chance + 0.08, method
            assert abs(unrelated.bacc[method][i] - 0.5) < 0.08, method


def test_the_dense_probe_separates_a_direction_no_single_dim_carries():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(N, D, generator=gen)
    score = x @ torch.ones(D) / D**0.5
    # A: score > 0.6 (27%), B: score < -0.2 (42%), C: the band between (not linear)
    labels = torch.where(score > 0.6, 0, torch.where(score > -0.2, 2, 1))
    result = probe_layer(_firings(labels, x_ND=x), VOCAB)[0]["pos"]
    assert result.labels == ["A", "B", "C"]
    assert min(result.f1["dense"][:2]) > 0.95
    assert max(result.f1["neuron@1"][:2]) < 0.8  # one dimension sees an eighth of it
    assert max(result.f1["sae@20"][:2]) < 0.6  # the random latents know nothing


def test_mean_difference_matches_a_dense_computation():
    labels = _labels([0.2, 0.3, 0.4, 0.1])
    f = _firings(labels, planted=labels == 2)
    dense = torch.zeros(N, D_SAE)
    for n, k in itertools.product(range(N), range(f.idx_NK.shape[1])):
        dense[n, f.idx_NK[n, k]] += f.vals_NK[n, k]
    direct = torch.stack([(dense[labels == y].mean(0) - dense[labels != y].mean(0)).abs()
                          for y in range(4)], 1)
    got = mean_diff_sparse(f.idx_NK, f.vals_NK, labels, 4, D_SAE)
    torch.testing.assert_close(got, direct, rtol=1e-5, atol=1e-6)
    assert torch.equal(top_columns(got, 3)[:, 0], direct.argmax(0))
    assert top_columns(got, 3)[2, 0] == 0
    x = f.x_ND.float()
    direct_x = torch.stack([(x[labels == y].mean(0) - x[labels != y].mean(0)).abs()
                            for y in range(4)], 1)
    torch.testing.assert_close(mean_diff_dense(x, labels, 4), direct_x, rtol=1e-5, atol=1e-6)


def _penalised_grad(x_LNk, y_LN, beta):
    beta = beta.clone().requires_grad_(True)
    z = torch.bmm(x_LNk, beta[:, :-1, None]).squeeze(2) + beta[:, -1:]
    nll = torch.nn.functional.binary_cross_entropy_with_logits(z, y_LN, reduction="none")
    loss = (class_weights(y_LN) * nll).mean(1).sum() + 0.5 * L2 * beta[:, :-1].square().sum()
    loss.backward()
    return beta.grad


def test_newton_and_lbfgs_reach_the_same_minimum():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(600, 5, generator=gen)
    logits = torch.stack([x[:, 0] * 2 - 1, x[:, 1] - x[:, 2], torch.zeros(600)])
    y = (torch.rand(3, 600, generator=gen) < torch.sigmoid(logits)).float()
    beta = fit_sparse(x.expand(3, -1, -1), y)
    assert _penalised_grad(x.expand(3, -1, -1), y, beta).abs().max() < 1e-5
    w = fit_dense(x, y, class_weights(y), steps=100)
    torch.testing.assert_close(w.T, beta, atol=2e-3, rtol=0)


def test_scores_match_their_definitions():
    gen = torch.Generator().manual_seed(5)
    z = torch.randint(-3, 4, (3, 40), generator=gen).float()  # many ties
    y = (torch.rand(3, 40, generator=gen) < 0.4).float()
    for row in range(3):
        pos, neg = z[row][y[row] > 0], z[row][y[row] == 0]
        pairs = (pos[:, None] > neg[None]).float() + 0.5 * (pos[:, None] == neg[None]).float()
        assert abs(float(auroc(z, y)[row]) - float(pairs.mean())) < 1e-6
        tp = int(((z[row] > 0) & (y[row] > 0)).sum())
        precision, recall = tp / int((z[row] > 0).sum()), tp / int(y[row].sum())
        want = 2 * precision * recall / (precision + recall)
        assert abs(float(f1_scores(z, y)[row]) - want) < 1e-6


def _midranks(values):
    """1-based ranks, tied values sharing the mean of their ranks (by hand, no sort ties)."""
    vals = values.tolist()
    return [sum(1 for u in vals if u < v) + (1 + sum(1 for u in vals if u == v)) / 2
            for v in vals]


def test_auroc_is_the_mann_whitney_u_fraction_from_rank_sums():
    """U = (sum of the positives' midranks) - n_pos (n_pos + 1) / 2, over n_pos n_neg."""
    gen = torch.Generator().manual_seed(8)
    z = torch.randint(-2, 3, (4, 30), generator=gen).float()  # many ties
    y = (torch.rand(4, 30, generator=gen) < 0.3).float()
    z[3] = y[3] * 2 - 1 + 0.1 * torch.arange(30)  # positives ahead, then some overtaken
    for row in range(4):
        ranks = _midranks(z[row])
        n_pos = int(y[row].sum())
        rank_sum = sum(r for r, t in zip(ranks, y[row].tolist(), strict=True) if t > 0)
        u = rank_sum - n_pos * (n_pos + 1) / 2
        want = u / (n_pos * (30 - n_pos))
        assert abs(float(auroc(z, y)[row]) - want) < 1e-6
    assert float(auroc(torch.tensor([[0.1, 0.9, 0.2, 0.8]]),
                       torch.tensor([[0.0, 1.0, 0.0, 1.0]]))) == 1.0


def test_balanced_accuracy_of_perfect_constant_and_planted_probes():
    y = torch.tensor([[1.0, 1, 0, 0, 0, 0, 0, 0]]).expand(3, -1)
    perfect = y * 2 - 1
    assert balanced_accuracy(perfect, y).tolist() == [1.0] * 3
    for constant in (1.0, -1.0):  # all positive or all negative: 0.5 at any base rate
        assert balanced_accuracy(torch.full((3, 8), constant), y).tolist() == [0.5] * 3
    z = torch.tensor([[1.0, -1, 1, 1, -1, -1, -1, -1]])  # recall 1/2, specificity 4/6
    assert float(balanced_accuracy(z, y[:1])) == pytest.approx((1 / 2 + 4 / 6) / 2)
    assert float(balanced_accuracy(-perfect[:1], y[:1])) == 0.0


def test_rare_majority_and_sep_labels_are_skipped():
    heldout = torch.arange(400) % 2 == 1
    learn, held = torch.arange(0, 400, 2), torch.arange(1, 400, 2)
    names = ["rare", "common", "major", "sep", "ok"]
    labels = torch.full((400,), 4)
    labels[learn[:49]], labels[held[:60]] = 0, 0  # 49 learn positives: one short
    labels[learn[49:109]], labels[held[60:120]] = 1, 1
    labels[learn[109:169]], labels[held[120:180]] = 3, 3
    assert eligible_labels(labels, heldout, names) == [1]  # "ok": 31 + 20
    labels = torch.full((400,), 2)
    labels[learn[:100]], labels[held[:99]] = 1, 1  # "major" is 201 of 400
    assert eligible_labels(labels, heldout, names) == [1]
    labels[held[99]] = 1  # 200 of 400 each: both at the maximum, both kept
    assert eligible_labels(labels, heldout, names) == [1, 2]
    few = _firings(torch.zeros(N, dtype=torch.long))  # every token "A": nothing to probe
    assert probe_layer(few, VOCAB)[0]["pos"].labels == []


def test_a_result_round_trips_and_another_atlas_reads_as_none(tmp_path):
    labels = _labels([0.2, 0.3, 0.5])
    firings = {"layers.0": _firings(labels, planted=labels == 0),
               "layers.1": _firings(labels, seed=2)}
    sae = Sae.init_from_data(SaeConfig(d_in=D, d_sae=D_SAE, k=K, hookpoint="layers.0"),
                             torch.randn(32, D), seed=0)
    sae.metadata = {"median_norm": 1.0}
    fingerprint = save_as_atlas(tmp_path, {"layers.0": sae})
    assert read_probing(tmp_path) is None and read_probing(None) is None
    result = compute_probing(firings, VOCAB, ks=(1, 5), sae_fingerprint=fingerprint)
    assert result.per_layer("sae", 1)[0] > result.per_layer("sae", 1)[1]  # planted in 0
    result.save(tmp_path / PROBING_FILE)
    again = read_probing(tmp_path)
    assert again == result and again.table() == result.table()
    assert [row["layer"] for row in again.table()] == [0, 1]
    assert again.mean("dense") == result.mean("dense", 20)  # dense has no k
    assert again.documents == {"unseen_by_saes": False}
    row = again.table()[0]
    assert {"sae_k5_bacc", "neuron_k5_auroc", "dense_bacc"} <= set(row)
    assert row["sae_k1_bacc"] == again.layers[0]["pos"].mean_f1("sae@1", "bacc")
    assert result.mean("sae", 1, "bacc") == pytest.approx(sum(
        tp.mean_f1("sae@1", "bacc") for layer in result.layers for tp in layer.values()) / 2)
    ProbingResult(result.hookpoints, result.layers, result.ks, "other").save(
        tmp_path / PROBING_FILE)
    assert read_probing(tmp_path) is None
    (tmp_path / PROBING_FILE).write_text('{"layers": [')
    with pytest.raises(CorruptFile):
        read_probing(tmp_path)
    (tmp_path / PROBING_FILE).write_text('{"layers": []}')
    with pytest.raises(CorruptFile):
        ProbingResult.load(tmp_path / PROBING_FILE)
