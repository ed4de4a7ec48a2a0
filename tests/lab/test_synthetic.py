"""The synthetic benchmark's parts: the generator keeps its promises (unit features, the
true L0, power-law frequencies, co-firing groups, determinism), the recovery scores count
planted matches, and a TopK SAE trained by the lab's harness finds an easy dictionary."""

import dataclasses

import pytest
import torch

from sae_core.config import TrainConfig
from sae_core.lab.fit import FitResult, evaluate_fit, fit_sae
from sae_core.lab.recovery import fvu, mmcs, random_dictionary, recovered
from sae_core.lab.synthetic import (
    SyntheticConfig,
    activations,
    feature_probs,
    groups,
    sample,
    sample_codes,
    true_features,
)
from sae_core.metrics import fvu as metrics_fvu
from sae_core.train.trainer import sae_batches

EASY = SyntheticConfig(d=16, n_features=32, mean_active=1.5, freq_exponent=0.0, n_groups=0,
                       seed=3)
EASY_RECIPE = TrainConfig(expansion=4, k=2, batch_tokens=128, lr=3e-3)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: with another process on the second core, 2 threads trained the easy
    SAE in 25 s against 0.5 s on one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _fired(cfg: SyntheticConfig, n: int, seed: int = 1) -> torch.Tensor:
    return (sample_codes(cfg, n, _gen(seed)) > 0).double()


def test_features_are_unit_rows_fixed_by_the_seed():
    cfg = SyntheticConfig()
    feats = true_features(cfg)
    assert feats.shape == (512, 64)
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(512))
    assert torch.equal(feats, true_features(cfg))
    assert not torch.allclose(feats, true_features(dataclasses.replace(cfg, seed=1)))


def test_samples_are_codes_times_features_plus_noise_and_repeat_by_seed():
    cfg = dataclasses.replace(EASY, noise_std=0.0)
    codes = sample_codes(cfg, 500, _gen(7))
    assert (codes >= 0).all() and (codes > 0).any()
    torch.testing.assert_close(sample(cfg, 500, _gen(7)), codes @ true_features(cfg))
    noisy, gen = sample(EASY, 500, _gen(7)), _gen(7)
    assert torch.equal(noisy, activations(EASY, sample_codes(EASY, 500, gen), gen))
    assert torch.equal(sample(EASY, 9000, _gen(5)), sample(EASY, 9000, _gen(5)))
    assert not torch.equal(sample(EASY, 100, _gen(5)), sample(EASY, 100, _gen(6)))
    residual_std = float((noisy - codes @ true_features(cfg)).std())
    assert residual_std == pytest.approx(EASY.noise_std, rel=0.05)


def test_the_mean_active_count_matches_the_config():
    for cfg in (SyntheticConfig(), EASY, SyntheticConfig(mean_active=12, group_correlation=0.9)):
        probs = feature_probs(cfg)
        assert float(probs.sum()) == pytest.approx(cfg.mean_active)
        # 40k rows: the standard error of the mean count is under 0.02
        assert float(_fired(cfg, 40_000).sum(1).mean()) == pytest.approx(cfg.mean_active,
                                                                         abs=0.08)


def test_frequencies_follow_the_power_law():
    cfg = SyntheticConfig(freq_exponent=0.8, mean_active=6)
    freq = _fired(cfg, 60_000).mean(0)
    probs = feature_probs(cfg)
    assert (probs[:-1] > probs[1:]).all()
    bands = [float(b.mean()) for b in freq.tensor_split(8)]
    assert bands == sorted(bands, reverse=True)
    # slope of log frequency against log rank, least squares: -freq_exponent
    log_rank = torch.arange(1, cfg.n_features + 1).double().log()
    log_freq = freq.clamp_min(1e-6).log()
    lr, lf = log_rank - log_rank.mean(), log_freq - log_freq.mean()
    assert float((lr * lf).sum() / lr.pow(2).sum()) == pytest.approx(-0.8, abs=0.05)


def _co_firing_ratio(fired, pairs) -> float:
    """Observed joint firings of the pairs over those expected were they independent."""
    f = fired.float()
    joint, freq = (f.T @ f) / len(f), f.mean(0)
    a, b = pairs[:, 0], pairs[:, 1]
    return float(joint[a, b].sum() / (freq[a] * freq[b]).sum())


def _pairs(cfg: SyntheticConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(pairs within a group, pairs of features in no group)."""
    group = groups(cfg)
    same = torch.cat([torch.combinations((group == g).nonzero().squeeze(1))
                      for g in range(cfg.n_groups)])
    loners = (group < 0).nonzero().squeeze(1)[:60]
    return same, torch.combinations(loners)


def test_groups_fire_together_and_loners_independently():
    cfg = SyntheticConfig(mean_active=8)
    group = groups(cfg)
    assert torch.bincount(group[group >= 0]).tolist() == [cfg.group_size] * cfg.n_groups
    same, loners = _pairs(cfg)
    fired = _fired(cfg, 40_000)
    assert _co_firing_ratio(fired, same) > 3
    assert _co_firing_ratio(fired, loners) == pytest.approx(1.0, abs=0.1)
    flat = dataclasses.replace(cfg, group_correlation=0.0)
    assert _co_firing_ratio(_fired(flat, 40_000), same) == pytest.approx(1.0, abs=0.1)


def test_mmcs_of_a_dictionary_with_itself_in_any_order_and_sign_is_1():
    feats = true_features(SyntheticConfig(d=32, n_features=100, n_groups=0))
    perm = torch.randperm(100, generator=_gen(0))
    signs = torch.where(torch.rand(100, generator=_gen(1)) < 0.5, -1.0, 1.0)
    for dec in (feats, 3 * feats[perm] * signs[:, None]):
        assert mmcs(feats, dec) == pytest.approx(1.0)
        assert recovered(feats, dec) == 1.0
    assert mmcs(feats, random_dictionary(100, 32)) < 0.7


def test_recovered_counts_a_planted_subset():
    feats = true_features(SyntheticConfig(d=64, n_features=40, n_groups=0))
    exact = feats[:10]
    # rows at cosine 0.8 with features 10..14: the normalised part of a random vector
    # orthogonal to the feature, mixed 0.8 : 0.6
    noise = torch.randn(5, 64, generator=_gen(2))
    noise -= (noise * feats[10:15]).sum(1, keepdim=True) * feats[10:15]
    near = 0.8 * feats[10:15] + 0.6 * noise / noise.norm(dim=1, keepdim=True)
    dec = torch.cat([exact, near])
    best = torch.tensor([max(abs(float(f @ r) / float(r.norm())) for r in dec) for f in feats])
    assert recovered(feats, dec, 0.9) == pytest.approx(10 / 40)
    assert recovered(feats, dec, 0.75) == pytest.approx(15 / 40)
    assert mmcs(feats, dec) == pytest.approx(float(best.double().mean()), abs=1e-6)


def test_topk_training_recovers_an_easy_dictionary():
    train, test = sample(EASY, 50_000, _gen(1)), sample(EASY, 5_000, _gen(2))
    result = fit_sae(train, EASY_RECIPE)
    assert isinstance(result, FitResult)
    assert result.steps == len(sae_batches(train, EASY_RECIPE.batch_tokens)) == 391
    assert result.seconds < 20
    scores = evaluate_fit(result.sae, test, true_features(EASY))
    assert scores["mmcs"] > 0.95 and scores["recovered_09"] >= 0.9, scores
    assert scores["l0"] == pytest.approx(2, abs=0.05)
    assert scores["mmcs"] > mmcs(true_features(EASY), random_dictionary(64, 16)) + 0.3
    x_hat = result.sae(test).x_hat.detach()
    assert scores["fvu"] == pytest.approx(float(metrics_fvu(test.double(), x_hat.double())))
    assert scores["fvu"] == pytest.approx(fvu(result.sae, test))


def test_fits_repeat_by_seed_and_take_any_architecture():
    train, test = sample(EASY, 4_000, _gen(1)), sample(EASY, 1_000, _gen(2))
    a, b = fit_sae(train, EASY_RECIPE, seed=4), fit_sae(train, EASY_RECIPE, seed=4)
    assert torch.equal(a.sae.W_dec, b.sae.W_dec)
    assert not torch.equal(a.sae.W_dec, fit_sae(train, EASY_RECIPE, seed=5).sae.W_dec)
    relu = fit_sae(train, dataclasses.replace(EASY_RECIPE, architecture="relu"))
    assert relu.sae.cfg.architecture == "relu" and relu.sae.cfg.d_sae == 64
    scores = evaluate_fit(relu.sae, test)
    assert set(scores) == {"fvu", "l0", "dead"} and 0 <= scores["dead"] <= 1
    # a latent whose encoder row points away from every row never fires: dead on test
    with torch.no_grad():
        relu.sae.W_enc_SD[0] = -100 * test.abs().max()
        relu.sae.b_enc[0] = -1e6
    assert evaluate_fit(relu.sae, test)["dead"] >= 1 / 64
