"""A steering direction trained for a concept, on a tiny random model whose sharpened
unembedding makes the planted SAE row (tests/steer/test_effect.py) the token's direction."""

import math
from itertools import pairwise

import pytest
import torch

from sae_core.activations import OUTLIER_FACTOR
from sae_core.errors import BadInput
from sae_core.hooks import hooks_left
from sae_core.steer.edits import DirectionSteer, Steering
from sae_core.steer.effect import pushed_effects
from sae_core.steer.trained_direction import _losses, _prepare, _replayed_block, train_direction
from tests.conftest import tiny_lm
from tests.steer.common import _n_hooks
from tests.steer.test_effect import TOKEN, _planted_sae, _probe

H = "layers.1"
PLANTED, UNRELATED = 7, 2  # rows of the planted SAE: the token's direction, a random one
STRENGTH = 0.1


@pytest.fixture(scope="module")
def setup():
    lm = tiny_lm(n_layers=3)
    lm.model.lm_head.weight.data *= 30  # a random init predicts near-uniformly: sharpen it
    saes = {h: _planted_sae(lm, h, TOKEN) for h in (H, "layers.1.mlp", "layers.0.attn")}
    norms = dict.fromkeys(saes, 1.0)
    return lm, saes, norms, _probe(lm), torch.tensor([TOKEN])


def _measure(setup, *directions):
    lm, saes, norms, probe, ids = setup
    rows = [Steering((DirectionSteer(H, d, STRENGTH),)) for d in directions]
    return pushed_effects(lm, saes, norms, probe, rows, ids)


def _train(setup, init, **kw):
    lm, saes, norms, probe, ids = setup
    return train_direction(lm, saes, norms, H, init, probe, ids,
                           **{"strength": STRENGTH, "max_kl": 3.0, **kw})


def _cos(a, b):
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def test_training_raises_the_planted_token(setup):
    """From an unrelated row, the trained direction at the same strength makes the token
    several times likelier, measured independently, and turns towards the planted row."""
    w_dec = setup[1][H].W_dec.detach()
    init = w_dec[UNRELATED].clone()
    result = _train(setup, init)
    p0, (before, after) = _measure(setup, init, result.direction)
    assert after.concept_prob >= 2 * before.concept_prob
    assert after.concept_prob > 2 * p0  # not just back to the unsteered probability
    assert after.kl <= 3.0 * 1.05  # the bound, up to the last step's overshoot
    for got, want in ((result.before, before), (result.after, after)):
        assert got.concept_prob == pytest.approx(want.concept_prob, rel=1e-4)
        assert got.kl == pytest.approx(want.kl, rel=1e-4, abs=1e-6)
    assert result.p0 == pytest.approx(p0, rel=1e-5)
    assert _cos(result.direction, w_dec[PLANTED]) > _cos(init, w_dec[PLANTED]) + 0.3
    assert 1 <= result.steps <= 25 and result.seconds > 0
    torch.testing.assert_close(init, w_dec[UNRELATED])  # the start is not changed in place


def test_the_kl_bound_holds(setup):
    """With a tight bound and a large weight the trained direction stays near the bound;
    without the penalty it spends far more KL on the concept."""
    init = setup[1][H].W_dec.detach()[UNRELATED]
    free = _train(setup, init, max_kl=0.5, kl_weight=0.0)
    bound = _train(setup, init, max_kl=0.5, kl_weight=100.0)
    assert free.after.kl > 1.0
    assert bound.after.kl <= 0.5 * 1.1 < free.after.kl
    assert bound.after.concept_prob < free.after.concept_prob  # the bound costs probability


def test_result_model_and_hooks_afterwards(setup):
    """Unit-norm finite CPU direction; the model unchanged, frozen, without hooks; progress
    reported in rising fractions up to 1.0; and all of it inside an outer inference_mode,
    as the app may call it."""
    lm = setup[0]
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    fractions = []
    with torch.inference_mode():
        result = _train(setup, torch.randn(lm.d_model, generator=torch.Generator()
                                           .manual_seed(5)), steps=6,
                        report=lambda message, fraction: fractions.append(fraction))
    d = result.direction
    assert d.device.type == "cpu" and d.shape == (lm.d_model,) and d.dtype == torch.float32
    assert bool(torch.isfinite(d).all()) and float(d.norm()) == pytest.approx(1.0, abs=1e-5)
    assert not d.requires_grad
    after = lm.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in lm.model.parameters())
    assert all(p.grad is None for p in lm.model.parameters())
    assert _n_hooks(lm) == 0 and hooks_left(lm) == 0
    assert len(fractions) == result.steps + 1 and fractions[-1] == 1.0
    assert all(a < b for a, b in pairwise(fractions))


@pytest.mark.parametrize("hookpoint", [H, "layers.1.mlp", "layers.0.attn"])
def test_the_training_objective_is_what_pushed_effects_measures(setup, hookpoint):
    """The KL the loss penalises, computed from the replayed residual stream under autograd
    (the edited block's own output; the block below; nothing), equals the measured KL, and
    the gradient reaches the direction."""
    lm, saes, norms, probe, ids = setup
    v = saes[hookpoint].W_dec.detach()[UNRELATED].clone().requires_grad_(True)
    replayed = _replayed_block(hookpoint)
    assert replayed == {H: 1, "layers.1.mlp": 0, "layers.0.attn": -1}[hookpoint]
    groups = _prepare(lm, probe, replayed)
    nll, kl = _losses(lm, saes, norms, hookpoint, v, STRENGTH, groups, ids.clone(), replayed,
                      OUTLIER_FACTOR)
    (grad,) = torch.autograd.grad(nll + kl, [v])
    nll, kl = float(nll.detach()), float(kl.detach())
    _, (effect,) = pushed_effects(lm, saes, norms, probe, [
        Steering((DirectionSteer(hookpoint, v.detach(), STRENGTH),))], ids)
    assert kl == pytest.approx(effect.kl, rel=1e-4)
    assert math.exp(-nll) <= effect.concept_prob  # Jensen: mean log <= log mean
    assert bool(torch.isfinite(grad).all()) and float(grad.norm()) > 0
    assert _n_hooks(lm) == 0 and hooks_left(lm) == 0


def test_bad_inputs(setup):
    lm, saes, norms, probe, ids = setup
    init = saes[H].W_dec.detach()[UNRELATED]
    ok = {"hookpoint": H, "init_D": init, "concept_ids": ids, "strength": STRENGTH,
          "max_kl": 1.0}
    bad = [{"hookpoint": "layers.2"}, {"hookpoint": 3},
           {"init_D": init[:5]}, {"init_D": torch.zeros_like(init)},
           {"init_D": torch.full_like(init, float("nan"))}, {"init_D": [1.0] * lm.d_model},
           {"steps": 0}, {"steps": 2.5}, {"strength": 25.0}, {"strength": 0.0},
           {"strength": float("nan")}, {"max_kl": 0.0}, {"max_kl": -1.0},
           {"max_kl": float("inf")}, {"lr": 0.0}, {"kl_weight": -1.0},
           {"concept_ids": torch.tensor([], dtype=torch.long)},
           {"concept_ids": torch.tensor([10_000])}, {"concept_ids": torch.tensor([0.5])}]
    for change in bad:
        kw = {**ok, **change}
        with pytest.raises(BadInput):
            train_direction(lm, saes, norms, kw.pop("hookpoint"), kw.pop("init_D"), probe,
                            kw.pop("concept_ids"), **kw)
    with pytest.raises(BadInput):  # no typical norm for the hookpoint
        train_direction(lm, saes, {}, H, init, probe, ids, strength=STRENGTH, max_kl=1.0)
    assert _n_hooks(lm) == 0
