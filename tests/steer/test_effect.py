"""Pushed measurements, the output score, the dose search and the difference of means, on a
tiny random model and hand-set weights."""

import math

import pytest
import torch

from sae_core.config import SaeConfig
from sae_core.explore.logit_lens import direction_logits, token_zscores
from sae_core.sae import Sae
from sae_core.steer.baselines import mean_difference, prompted
from sae_core.steer.concept_tokens import concept_token_ids, concept_words
from sae_core.steer.dose import DoseRule, dose_search, pick_dose, trial_strengths
from sae_core.steer.edits import DirectionSteer, FeatureSteer, Steering, steering_hooks
from sae_core.steer.effect import Effect, Probe, pushed_effects
from sae_core.steer.finder import efficiency
from tests.conftest import tiny_lm

TOKEN = 5  # "cat" in the tiny vocabulary (ids 3.. are WORDS)


def _planted_sae(lm, hookpoint: str, token: int, planted: int = 7, d_sae: int = 24) -> Sae:
    """Random decoder rows, except row `planted`: the unembedding row of `token` (through
    the final norm's gain), the direction that raises that token's logit most."""
    g = torch.Generator().manual_seed(3)
    sae = Sae(SaeConfig(d_in=lm.d_model, d_sae=d_sae, k=4, hookpoint=hookpoint))
    sae.W_dec.data.copy_(torch.randn(d_sae, lm.d_model, generator=g))
    w_u = lm.model.get_output_embeddings().weight[token].detach()
    gain = lm.model.model.norm.weight.detach()
    sae.W_dec.data[planted] = w_u * gain * (sae.W_dec.data[0].norm() / (w_u * gain).norm())
    return sae


def _probe(lm) -> Probe:
    tok = lm.tokenizer
    ids = [torch.tensor(tok(p).input_ids) for p in ("the dog ran on the mat", "a mat is big")]
    answers = [torch.tensor(tok(a).input_ids) for a in ("the cat sat .", "Paris is big .")]
    return Probe(tuple(ids), tuple(answers))


def test_zscores_equal_the_full_vocabulary_computation():
    lm = tiny_lm()
    dirs = torch.randn(6, lm.d_model)
    ids = torch.tensor([3, 5, 9])
    logits = direction_logits(lm, dirs)[:, : len(lm.tokenizer)]
    want = (logits[:, ids] - logits.mean(-1, keepdim=True)) / logits.std(-1, correction=0,
                                                                          keepdim=True)
    torch.testing.assert_close(token_zscores(lm, dirs, ids), want, rtol=1e-4, atol=1e-4)


def test_output_score_picks_the_planted_feature():
    lm = tiny_lm(n_layers=2)
    lm.model.lm_head.weight.data *= 30  # a random init predicts near-uniformly: sharpen it
    hookpoint = "layers.1"
    sae = _planted_sae(lm, hookpoint, TOKEN)
    z = token_zscores(lm, sae.W_dec.detach(), torch.tensor([TOKEN]))[:, 0]
    assert int(z.argmax()) == 7
    probe, ids = _probe(lm), torch.tensor([TOKEN])

    def pushed(strength):
        rows = [Steering((FeatureSteer(hookpoint, f, strength),)) for f in range(24)]
        return pushed_effects(lm, {hookpoint: sae}, {hookpoint: 1.0}, probe, rows, ids)

    p0, effects = pushed(0.05)
    probs = [e.concept_prob for e in effects]
    assert max(range(len(probs)), key=probs.__getitem__) == 7
    assert probs[7] > 10 * p0 and probs[7] > 5 * max(probs[:7] + probs[8:])
    p0, effects = pushed(0.01)  # a small push: efficiency is the directional derivative
    assert max(range(len(effects)), key=lambda f: efficiency(effects[f], p0)) == 7


def _reference(lm, saes, norms, probe, rows, ids):
    """The same measures from plain full forwards of the whole batch, no reuse."""
    p0s, probs, kls = [], [], []
    for ids_P, ans in zip(probe.prompts, probe.answers, strict=True):
        seq = torch.cat([ids_P, ans])[None].expand(len(rows) + 1, -1)
        T = len(ans)
        with torch.inference_mode(), steering_hooks(lm, saes, norms, [None, *rows],
                                                    prompt_len=len(ids_P)):
            logits = lm.model(input_ids=seq, use_cache=False).logits[:, -T - 1:-1]
        logp = logits[..., : len(lm.tokenizer)].log_softmax(-1)  # tokens the text can hold
        p = logp.exp()
        p0s.append(p[0, :, ids].sum(-1).mean())
        probs.append(p[1:, :, ids].sum(-1).mean(-1))
        kls.append((p[1:] * (logp[1:] - logp[:1])).sum(-1).mean(-1))
    return (float(torch.stack(p0s).mean()), torch.stack(probs).mean(0),
            torch.stack(kls).mean(0))


def test_pushed_effects_equal_full_forwards_of_the_batch():
    """Rows batched by their first layer and resumed from the recorded residual stream give
    what full forwards give, for single features, several layers and plain directions."""
    lm = tiny_lm(n_layers=3)
    saes = {h: _planted_sae(lm, h, TOKEN) for h in ("layers.0", "layers.1", "layers.2")}
    norms = {"layers.0": 1.5, "layers.1": 2.0, "layers.2": 2.5}
    v = torch.randn(lm.d_model)
    rows = [Steering((FeatureSteer("layers.2", 7, 1.0),)),
            Steering((FeatureSteer("layers.0", 3, 0.5),)),
            Steering((FeatureSteer("layers.1", 7, 0.7), FeatureSteer("layers.2", 1, -0.4))),
            Steering((DirectionSteer("layers.1", v, 0.8),))]
    ids, probe = torch.tensor([TOKEN, 9]), _probe(lm)
    p0, effects = pushed_effects(lm, saes, norms, probe, rows, ids)
    want_p0, want_prob, want_kl = _reference(lm, saes, norms, probe, rows, ids)
    assert p0 == pytest.approx(want_p0, rel=1e-5)
    torch.testing.assert_close(torch.tensor([e.concept_prob for e in effects]), want_prob,
                               rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(torch.tensor([e.kl for e in effects]), want_kl,
                               rtol=1e-3, atol=1e-6)
    assert all(e.kl > 1e-4 for e in effects)


def test_dose_search_returns_the_smallest_passing_strength():
    rule = DoseRule(min_prob=0.05, min_lift=3.0, max_kl=1.0)
    grid = (0.1, 0.2, 0.3, 0.4, 0.6, 0.8)

    def measure(strengths):  # probability and KL both rise with the strength
        return 0.01, [Effect(0.01 + 0.2 * s * s, 2.0 * s * s) for s in strengths]

    curve = dose_search(measure, rule, grid)
    # 0.01 + 0.2 s^2 >= 0.05  <=>  s >= 0.447; KL 2 s^2 <= 1  <=>  s <= 0.707
    assert curve.dose == 0.6
    assert all(not rule.passes(e, 0.01) for s, e in zip(curve.strengths, curve.effects,
                                                        strict=True) if s < 0.6)
    assert curve.best_within(1.0)[0] == 0.6
    # a stricter KL bound leaves no dose; a lift rule on a high baseline too
    assert dose_search(measure, DoseRule(min_prob=0.05, max_kl=0.5), grid).dose is None
    assert pick_dose(grid, measure(grid)[1], 0.2, rule) is None


def test_trial_strengths():
    rule, grid = DoseRule(min_prob=0.05, min_lift=3.0, max_kl=1.0), (0.1, 0.2, 0.4, 0.6, 0.8)

    def curve(kls, probs):
        return dose_search(lambda g: (0.01, [Effect(p, k) for p, k in zip(probs, kls,
                                                                        strict=True)]),
                           rule, grid)

    # a dose at 0.4; the next strength is within the bound: both are tried
    assert trial_strengths(curve([0.1, 0.3, 0.6, 0.9, 1.5], [0.01, 0.03, 0.06, 0.1, 0.2]),
                           rule) == [0.4, 0.6]
    # the next one is past the bound: the dose alone
    assert trial_strengths(curve([0.1, 0.3, 0.6, 1.2, 1.5], [0.01, 0.03, 0.06, 0.1, 0.2]),
                           rule) == [0.4]
    # no dose: the strongest within STRETCH x the bound
    assert trial_strengths(curve([0.1, 0.3, 1.5, 1.9, 2.5], [0.01, 0.01, 0.02, 0.03, 0.04]),
                           rule) == [0.6]
    assert trial_strengths(curve([3.0] * 5, [0.0] * 5), rule) == []


def test_efficiency_does_not_depend_on_a_small_strength():
    """log P rises like s and KL like s^2: the ratio is the same for s and 2s."""
    p0 = 0.01
    small = Effect(p0 * math.exp(0.5), 0.5 * 0.04)
    double = Effect(p0 * math.exp(1.0), 0.5 * 0.16)
    assert efficiency(small, p0) == pytest.approx(efficiency(double, p0))


def test_difference_of_means_of_planted_data_is_the_planted_direction():
    g = torch.Generator().manual_seed(0)
    d = torch.randn(48, generator=g)
    base_pos = torch.randn(400, 48, generator=g)
    base_neg = torch.randn(300, 48, generator=g)
    diff = mean_difference(base_pos + 0.5 + 2 * d, base_neg + 0.5)
    cos = torch.nn.functional.cosine_similarity(diff, d, dim=0)
    assert cos > 0.95
    # exactly the planted direction when the background is the same on both sides
    torch.testing.assert_close(mean_difference(base_neg + 3 * d, base_neg), 3 * d)
    with pytest.raises(ValueError, match="both sides"):
        mean_difference(base_pos[:0], base_neg)


def test_concept_words_and_tokens():
    lm = tiny_lm()
    assert concept_words("cat", "dog, Cat; mat\n") == ("cat", "dog", "mat")
    assert concept_words(" big ", ["Paris", "", "  "]) == ("big", "Paris")
    with pytest.raises(ValueError, match="type a word"):
        concept_words("  ", "dog")
    with pytest.raises(ValueError, match="at most"):
        concept_words("a", [f"w{i}" for i in range(40)])
    ids = concept_token_ids(lm.tokenizer, ["cat", "Paris"])
    assert ids.tolist() == sorted(lm.tokenizer.convert_tokens_to_ids(["cat", "Paris"]))
    with pytest.raises(ValueError, match="none of the concept"):
        concept_token_ids(lm.tokenizer, [""])


def test_prompting_baseline_names_the_concept():
    assert "ocean" in prompted("  Describe your house. ", "ocean")


def test_direction_steer_checks_its_vector():
    with pytest.raises(ValueError, match="nonzero"):
        DirectionSteer("layers.1", torch.zeros(4), 0.5)
    with pytest.raises(ValueError, match="one finite"):
        DirectionSteer("layers.1", torch.tensor([1.0, float("nan")]), 0.5)


def test_repetition_and_perplexity():
    from sae_core.steer.fluency import perplexity, repeated_share
    from sae_core.steer.generation import GenConfig, generate

    assert repeated_share([1, 2, 3, 1, 2, 3]) == pytest.approx(0.25)
    assert repeated_share([1, 2, 3, 4, 5]) == 0.0 and repeated_share([1, 2]) == 0.0
    assert repeated_share([7] * 10) == pytest.approx(7 / 8)
    lm = tiny_lm()
    ids = torch.tensor(lm.tokenizer("the cat sat on").input_ids)
    greedy = generate(lm, {}, {}, ids, [None], GenConfig(max_new_tokens=6, chat=False))[0]
    other = [(t + 5) % len(lm.tokenizer) for t in greedy]
    assert 1 <= perplexity(lm, ids, greedy) < perplexity(lm, ids, other)
    assert math.isnan(perplexity(lm, ids, []))
