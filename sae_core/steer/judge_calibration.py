"""The judge's calibration against hand scores, and the benchmark's interval: pure
functions over plain numbers (judge.py reads the texts).

Hand scores are dicts {"concept", "instruction", "fluency"} of 0-2 integers, written under
docs/steering_judge.md. Cut points are fitted on the development half's and agreement is
reported on the test half's (bench/steering_judge.py)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

from .. import stats
from .judge import Cuts, Judged, Signals, grade, harmonic

DIMENSIONS = ("concept", "instruction", "fluency")
SIGNAL_GRID = tuple(x / 20 for x in range(-10, 41))
"""Candidate cut points of the instruction margin and the excess NLL (nats per token)."""
RANK_GRID = tuple(x / 20 for x in range(21))
LOOP_GRID = (0.15, 0.2, 0.25, 0.3, 0.4, 0.5)


def hand_score(hand: dict) -> float:
    return harmonic(*(hand[d] for d in DIMENSIONS))


def agreement(judged: Sequence[Judged], hand: Sequence[dict]) -> dict[str, float]:
    """Exact agreement of each 0-2 score, and the Pearson correlation `r` of the overall
    (harmonic mean) scores."""
    if len(judged) != len(hand) or len(hand) < 2:
        raise ValueError("agreement needs two or more judged texts, each with hand scores")
    out = {d: statistics.mean(getattr(j, d) == h[d] for j, h in zip(judged, hand, strict=True))
           for d in DIMENSIONS}
    a, b = [j.score for j in judged], [hand_score(h) for h in hand]
    out["r"] = statistics.correlation(a, b) if len(set(a)) > 1 and len(set(b)) > 1 else 0.0
    return out


def _hits(sigs: Sequence[Signals], hand: Sequence[dict], dim: str) -> Callable[[Cuts], int]:
    return lambda cuts: sum(getattr(grade(s, cuts), dim) == h[dim]
                            for s, h in zip(sigs, hand, strict=True))


def fit_cuts(sigs: Sequence[Signals], hand: Sequence[dict]) -> Cuts:
    """The cut points that agree most with the hand scores, each score fitted on its own
    (each reads its own signals); ties go to the first in grid order."""
    concept = max((Cuts(concept_rank=(a, b)) for a in RANK_GRID for b in RANK_GRID if a <= b),
                  key=_hits(sigs, hand, "concept"))
    instruction = max((Cuts(instruction=(a, b)) for a in SIGNAL_GRID for b in SIGNAL_GRID
                       if a <= b), key=_hits(sigs, hand, "instruction"))
    fluency = max((Cuts(fluency_nll=(a, b), loop=lp) for a in SIGNAL_GRID for b in SIGNAL_GRID
                   if b <= a for lp in LOOP_GRID), key=_hits(sigs, hand, "fluency"))
    return Cuts(concept.concept_rank, instruction.instruction, fluency.fluency_nll,
                fluency.loop)


def bootstrap_interval(per_concept: dict[str, dict[str, float]], a: str, b: str | None = None,
                       *, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of mean(a) - mean(b) (or of mean(a)) over the concepts drawn
    with replacement: a method's pairs are resampled by concept, the unit that varies
    (sae_core/stats.py, the library's one bootstrap)."""
    def mean_difference(concepts: list[dict[str, float]]) -> float:
        return statistics.mean(c[a] - (c[b] if b else 0.0) for c in concepts)

    found = stats.bootstrap_interval(list(per_concept.values()), mean_difference,
                                     n_boot=draws, seed=seed)
    return found.lo, found.hi
