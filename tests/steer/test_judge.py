"""The offline judge's pure parts: the loop penalty, the 0-2 cut points, the harmonic mean,
and the keyword rule it is compared with. (The judge model itself is exercised by
bench/steering_judge.py; the unit tests stay offline and fast.)"""

import math

import pytest

from sae_core.steer.judge import (
    CUTS,
    Cuts,
    Judged,
    Signals,
    grade,
    harmonic,
    keyword_grade,
    loop_share,
)

PROSE = ("My ideal house would be a small cottage near a quiet lake, with a big kitchen, "
         "a porch where I can read in the evening and a garden full of tomatoes.")


def _signals(**kw) -> Signals:
    base = {"mentions": 2, "concept_rank": 1.0, "instruction_margin": 1.0, "nll_excess": 0.0,
            "loop": loop_share(PROSE)}
    return Signals(**(base | kw))


@pytest.mark.parametrize("looped", [
    "My ideal house is the cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat",
    "The cat earth is the cat earth. The cat earth is the cat earth. The cat earth is the",
    "Cats are nice. Prstrstrstrstrstrstrstrstrstrstrstrstrstrstrstrstrstr",
])
def test_a_loop_scores_zero_fluency_and_zero_overall(looped):
    share = loop_share(looped)
    assert share >= CUTS.loop
    # every other signal at its best: the loop alone sinks the text
    judged = grade(_signals(loop=share))
    assert judged.fluency == 0 and judged.score == 0.0


def test_prose_is_not_a_loop_and_scores_full_marks():
    assert loop_share(PROSE) < 0.1
    judged = grade(_signals())
    assert (judged.concept, judged.instruction, judged.fluency) == (2, 2, 2)
    assert judged.score == pytest.approx(2.0)


def test_loop_share_counts_repeats_exactly():
    # 6 words, 4 word 3-grams, one of them ("a b c") a repeat
    assert loop_share("a b c a b c") == pytest.approx(max(1 / 4, _char_share("abcabc")))
    assert loop_share("") == 0.0


def _char_share(chars: str) -> float:
    grams = [chars[i:i + 8] for i in range(len(chars) - 7)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def test_harmonic_mean_is_zero_when_any_score_is_zero_and_matches_the_formula():
    assert harmonic(2, 2, 0) == 0.0
    assert harmonic(1, 2, 2) == pytest.approx(3 / (1 + 0.5 + 0.5))
    assert harmonic(2, 2, 2) == 2.0


def test_cut_points_are_monotone_in_each_signal():
    cuts = Cuts(concept_rank=(0.5, 0.9), instruction=(0.0, 0.2), fluency_nll=(1.5, 0.5),
                loop=0.3)
    assert [grade(_signals(instruction_margin=m), cuts).instruction
            for m in (-1, 0.1, 0.5)] == [0, 1, 2]
    assert [grade(_signals(nll_excess=e), cuts).fluency for e in (0.2, 1.0, 3.0)] == [2, 1, 0]
    assert [grade(_signals(mentions=0, concept_rank=r), cuts).concept
            for r in (0.2, 0.6, 0.95)] == [0, 1, 1]  # 2 needs a mention
    assert grade(_signals(mentions=1, concept_rank=0.95), cuts).concept == 2
    assert grade(_signals(mentions=0, concept_rank=0.95), cuts).score == pytest.approx(
        harmonic(1, 2, 2))


def test_an_empty_answer_scores_zero():
    empty = Signals(0, 0.0, -math.inf, math.inf, 0.0)
    assert grade(empty).score == 0.0


def test_keyword_rule_scores_any_mention_as_a_full_hit():
    assert keyword_grade(3).score == 2.0 and keyword_grade(0).score == 0.0


def test_fit_recovers_planted_cut_points_and_agreement_is_then_perfect():
    import random

    from sae_core.steer.judge_calibration import agreement, fit_cuts

    planted = Cuts(concept_rank=(0.3, 0.7), instruction=(0.1, 0.6), fluency_nll=(1.0, 0.3),
                   loop=0.3)
    rng = random.Random(0)
    sigs = [Signals(rng.choice([0, 0, 1, 3]), rng.random(), rng.uniform(-0.5, 1.5),
                    rng.uniform(-0.5, 2.0), rng.choice([0.0, 0.05, 0.5, 0.9]))
            for _ in range(120)]
    hand = [{d: getattr(grade(s, planted), d) for d in ("concept", "instruction", "fluency")}
            for s in sigs]
    fitted = fit_cuts(sigs, hand)
    judged = [grade(s, fitted) for s in sigs]
    got = agreement(judged, hand)
    assert got["concept"] == got["instruction"] == got["fluency"] == 1.0
    assert got["r"] == pytest.approx(1.0)
    # a judge that always says 2 agrees only where the hand said 2
    flat = agreement([Judged(2, 2, 2)] * len(hand), hand)
    assert flat["concept"] == pytest.approx(sum(h["concept"] == 2 for h in hand) / len(hand))
    assert flat["r"] == 0.0


def test_bootstrap_interval_covers_the_mean_and_is_zero_width_without_spread():
    from sae_core.steer.judge_calibration import bootstrap_interval

    same = {f"c{i}": {"a": 1.0, "b": 0.25} for i in range(20)}
    assert bootstrap_interval(same, "a", "b") == (0.75, 0.75)
    spread = {f"c{i}": {"a": float(i % 5), "b": 0.0} for i in range(40)}
    lo, hi = bootstrap_interval(spread, "a", "b")
    assert lo < 2.0 < hi and hi - lo < 1.5
