"""The dose: the smallest steering strength that lifts the concept's probability clearly
while the text stays close to the unsteered model's (KL under a bound).

Pure functions on measured curves (effect.py measures them): a grid of strengths is measured
in one batch, which also gives the curve the app draws.

The default rule was calibrated on the six preset concepts (never on the benchmark's): for
each, greedy 48-token continuations of three probe prompts at strengths 0.1-0.4 for the
finder's four options (432 texts). Texts measured at concept probability >= 0.04 and
KL <= 1.5 named the concept in 83% of cases at a median perplexity ratio of 2.0 to the
unsteered text; at >= 0.02 and <= 1.0, 67% at 1.7 (docs/steering.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .effect import Effect

STRENGTHS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
"""The grid searched, in multiples of the layer's typical residual norm."""
STRETCH = 2.0
"""How far past the KL bound a recipe that never passes the rule is still tried."""


@dataclass(frozen=True)
class DoseRule:
    min_prob: float = 0.04
    """The concept's tokens must take at least this share of the next-token probability..."""
    min_lift: float = 3.0
    """...and at least this many times their unsteered share."""
    max_kl: float = 1.5
    """KL(steered || unsteered) per token, in nats, must stay at or under this."""

    def __post_init__(self) -> None:
        for name in ("min_prob", "min_lift", "max_kl"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")

    def lifts(self, effect: Effect, p0: float) -> bool:
        return effect.concept_prob >= max(self.min_prob, self.min_lift * p0)

    def passes(self, effect: Effect, p0: float) -> bool:
        return self.lifts(effect, p0) and effect.kl <= self.max_kl


@dataclass(frozen=True)
class DoseCurve:
    strengths: tuple[float, ...]
    effects: tuple[Effect, ...]
    p0: float
    """The unsteered concept probability (strength 0)."""
    dose: float | None
    """The smallest strength that passes the rule; None if none does."""

    @classmethod
    def of(cls, strengths: Sequence[float], effects: Sequence[Effect], p0: float,
           rule: DoseRule) -> DoseCurve:
        """The curve of effects measured at `strengths`, its dose picked by `rule`."""
        grid = tuple(strengths)
        return cls(grid, tuple(effects), p0, pick_dose(grid, effects, p0, rule))

    def effect_at(self, strength: float) -> Effect:
        """The effect measured at one of the curve's strengths."""
        return self.effects[self.strengths.index(strength)]

    @property
    def at_dose(self) -> Effect | None:
        return None if self.dose is None else self.effect_at(self.dose)

    def strength(self, rule: DoseRule) -> float | None:
        """The dose; without one, the strength that reaches the most concept probability
        within the KL bound (a weaker recipe, still the best this curve offers)."""
        if self.dose is not None:
            return self.dose
        best = self.best_within(rule.max_kl)
        return None if best is None else best[0]

    def best_within(self, max_kl: float) -> tuple[float, Effect] | None:
        """The strength with the highest concept probability at KL <= max_kl."""
        ok = [(s, e) for s, e in zip(self.strengths, self.effects, strict=True)
              if e.kl <= max_kl]
        return max(ok, key=lambda se: se[1].concept_prob) if ok else None


def pick_dose(strengths: Sequence[float], effects: Sequence[Effect], p0: float,
              rule: DoseRule) -> float | None:
    """The smallest strength whose effect passes `rule`."""
    passing = [s for s, e in zip(strengths, effects, strict=True) if rule.passes(e, p0)]
    return min(passing) if passing else None


def dose_search(measure: Callable[[Sequence[float]], tuple[float, list[Effect]]],
                rule: DoseRule, strengths: Sequence[float] = STRENGTHS) -> DoseCurve:
    """Measure every strength of the grid at once (`measure(strengths)` returns the unsteered
    concept probability and one Effect per strength) and pick the dose."""
    grid = tuple(sorted(set(float(s) for s in strengths)))
    if not grid or grid[0] <= 0:
        raise ValueError("dose strengths must be positive")
    p0, effects = measure(grid)
    return DoseCurve.of(grid, effects, p0, rule)


def trial_strengths(curve: DoseCurve, rule: DoseRule) -> list[float]:
    """The strengths worth a text check: the dose and the next grid strength within the KL
    bound; without a dose, the strongest within STRETCH x the bound (does a costlier push
    name the concept at all?)."""
    grid, effects = curve.strengths, curve.effects
    if curve.dose is not None:
        i = grid.index(curve.dose) + 1
        return [curve.dose] + ([grid[i]] if i < len(grid) and effects[i].kl <= rule.max_kl
                               else [])
    ok = [s for s, e in zip(grid, effects, strict=True) if e.kl <= STRETCH * rule.max_kl]
    return ok[-1:]
