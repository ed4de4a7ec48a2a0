"""Document bootstrap of the probing scores: counts per document sum to the scores computed
directly, a planted perfect probe has a point interval, a noisy one a real interval, and
the draws round-trip with the result."""

import pytest
import torch

from sae_core.explore.firings import LayerFirings
from sae_core.explore.probing import (
    PROBE_BOOT,
    PROBING_FILE,
    ProbingResult,
    compute_probing,
    confusion_by_document,
    label_draws,
    mean_over_tasks,
    scores_from_counts,
)
from sae_core.explore.probing_fit import balanced_accuracy, f1_scores

N, D, D_SAE, K = 2000, 6, 16, 3
VOCAB = {"pos": ["A", "B", "C", "sep"]}


def test_counts_by_document_give_the_direct_scores():
    gen = torch.Generator().manual_seed(0)
    z_LN, y_LN = torch.randn(3, 500, generator=gen), (torch.rand(3, 500, generator=gen) < 0.3)
    y_LN[2] = False  # a label without positives: balanced accuracy counts that class 0.5
    doc_N = torch.randint(0, 7, (500,), generator=gen)
    counts = confusion_by_document(z_LN, y_LN.float(), doc_N, 7)
    assert counts.sum(dim=(0, 2)).tolist() == [500.0] * 3
    total = counts.sum(2)
    assert torch.allclose(scores_from_counts(total, "f1").float(), f1_scores(z_LN, y_LN))
    assert torch.allclose(scores_from_counts(total, "bacc").float(),
                          balanced_accuracy(z_LN, y_LN))
    ones = torch.ones(1, 7, dtype=torch.float64)  # a draw of every document once
    assert torch.allclose(label_draws(counts, ones, "bacc")[:, 0].float(),
                          balanced_accuracy(z_LN, y_LN))
    with pytest.raises(ValueError, match="no interval"):
        scores_from_counts(total, "auroc")


def _firings(signal: float, seed: int) -> LayerFirings:
    """Label A on a fifth of the tokens (C, the rest, is too common to probe); latent 0
    fires on A with value `signal` plus noise, elsewhere with the noise alone; documents
    are runs of 50 tokens."""
    gen = torch.Generator().manual_seed(seed)
    label = torch.full((N,), 2)
    label[torch.rand(N, generator=gen) < 0.2] = 0
    idx = torch.stack([torch.randperm(D_SAE, generator=gen)[:K] for _ in range(N)])
    idx[:, 0] = 0
    vals = torch.rand(N, K, generator=gen) + 0.1
    vals[:, 0] = signal * (label == 0) + torch.rand(N, generator=gen)
    return LayerFirings(torch.randn(N, D, generator=gen).bfloat16(), {"pos": label}, idx,
                        vals > 0, D_SAE, vals, torch.zeros(N, dtype=torch.long),
                        torch.arange(N), torch.arange(N) % 2 == 1, torch.arange(N) // 50)


def test_a_perfect_probe_has_a_point_interval_and_a_noisy_one_a_real_one(tmp_path):
    firings = {"layers.0": _firings(5.0, 0), "layers.1": _firings(0.3, 1)}
    result = compute_probing(firings, VOCAB, ks=(1, 5))
    perfect, noisy = result.bands("sae", 1, "pos", "bacc")
    a_score = result.per_layer("sae", 1, "pos", "bacc")
    assert a_score[0] == pytest.approx(1.0, abs=1e-4)
    assert perfect == pytest.approx((a_score[0], a_score[0]), abs=1e-4)
    assert noisy[0] < a_score[1] < noisy[1] and noisy[1] - noisy[0] > 0.01
    assert result.draws["sae@1/bacc/pos"].shape == (2, PROBE_BOOT)
    # the task mean of the draws is the mean over the task's labels, draw by draw
    assert torch.equal(mean_over_tasks(result.draws, "sae@1", "bacc", None),
                       result.draws["sae@1/bacc/pos"])
    result.save(tmp_path / PROBING_FILE)
    again = ProbingResult.load(tmp_path / PROBING_FILE)
    assert again == result and set(again.draws) == set(result.draws)
    assert all(torch.equal(again.draws[k], v) for k, v in result.draws.items())
    assert again.bands("sae", 1, "pos", "bacc") == result.bands("sae", 1, "pos", "bacc")
    assert again.bands("sae", 1, "pos", "auroc") is None  # AUROC has no interval
