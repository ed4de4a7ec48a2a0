"""The concept finder end to end on the tiny atlas with a planted "Paris" feature."""

import pytest

from sae_core.steer.dose import STRENGTHS, DoseRule
from sae_core.steer.effect import make_probe
from sae_core.steer.finder import FIRES, PROMOTES, find_steering
from sae_core.steer.text_check import preference
from tests.steer.preset_helpers import (  # noqa: F401 (tiny_search: a fixture)
    FEATURE,
    HOOK,
    planted_copy,
    tiny_search,
)


@pytest.mark.usefixtures("tiny_search")
def test_the_finder_ranks_by_effect_and_doses_its_options(tiny_atlas, loaded, tmp_path):
    planted, _ = planted_copy(tiny_atlas, loaded.lm, tmp_path)
    rule = DoseRule(min_prob=0.08, min_lift=1.2, max_kl=3.0)  # a near-uniform tiny model
    reports = []
    f = find_steering(planted, "Paris", "", rule=rule,
                      report=lambda m, frac, **_: reports.append(frac))
    assert f.words == ("Paris",) and f.token_ids == (
        loaded.lm.tokenizer.convert_tokens_to_ids("Paris"),)
    keys = [(c.reach, c.efficiency) for c in f.candidates]
    assert keys == sorted(keys, reverse=True)
    for c in f.candidates:  # reach: the most concept probability within the KL bound
        within = [e.concept_prob for e in c.effects if e.kl <= rule.max_kl]
        assert c.reach == (max(within) if within else 0.0)
    planted_hit = next(c for c in f.candidates if (c.hookpoint, c.feature) == (HOOK, FEATURE))
    assert FIRES in planted_hit.source and PROMOTES in planted_hit.source
    assert f.candidates[0] == planted_hit  # it writes the word: it reaches the most
    assert planted_hit.reach > f.p0
    for o in f.options:
        assert o.curve.strengths == STRENGTHS and len(o.curve.effects) == len(STRENGTHS)
    planted_option = next(o for o in f.options if o.parts == (planted_hit,))
    assert planted_option.curve.dose is not None
    assert rule.passes(planted_option.curve.at_dose, f.p0)
    # the trials: every dosed option at its dose (and maybe one step up), checked by text
    tried = [t for t, _ in f.trials]
    assert {(t.name, t.curve.dose) for t in tried if t.strength == t.curve.dose} == {
        (o.name, o.curve.dose) for o in f.options if o.curve.dose is not None}
    assert all(t.strength >= t.curve.dose and t.effect.kl <= rule.max_kl for t in tried
               if t.curve.dose is not None)
    best_check = next(c for t, c in f.trials if t == f.best)  # the text check decides
    assert preference(best_check, f.best.effect) == max(preference(c, t.effect)
                                                        for t, c in f.trials)
    n = len(make_probe(planted.lm).prompts)
    assert all(0 <= c.named <= c.prompts == n and 0 <= c.repeated <= 1 for _, c in f.trials)
    assert (HOOK, FEATURE) in [(c.hookpoint, c.feature) for t, _ in f.trials
                               for c in t.parts]
    steering = f.best.steering()
    assert [s.strength for s in steering.features] == pytest.approx(
        [f.best.strength * f.best.share] * len(f.best.parts))
    assert reports[0] == 0.0 and reports[-1] == 1.0


@pytest.mark.usefixtures("tiny_search")
def test_the_finder_says_what_is_wrong(loaded):
    with pytest.raises(ValueError, match="type a word"):
        find_steering(loaded, "   ")
    with pytest.raises(ValueError, match="can be written"):
        find_steering(loaded, "ocean")  # no word of the tiny vocabulary
    with pytest.raises(ValueError, match="no layer"):
        find_steering(loaded, "Paris", layers=(7, 9))
