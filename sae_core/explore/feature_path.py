"""One feature followed through the layers: its best partner by decoder cosine, step by step
(lineage.py keeps each feature's closest partners in the adjacent layers)."""

from __future__ import annotations

from dataclasses import dataclass

from .lineage import LineageData, adjacent


@dataclass(frozen=True)
class PathStep:
    hookpoint: str
    feature: int
    cosine: float | None
    """With the step next to it on the way from the path's start (None at the start)."""
    jaccard: float | None


@dataclass(frozen=True)
class PathStop:
    """Where following the best partner stopped early: the layer whose best partner had a
    cosine under the floor, and that cosine."""

    hookpoint: str
    best_cosine: float


@dataclass(frozen=True)
class FeaturePath:
    steps: tuple[PathStep, ...]  # shallowest layer first
    start: int
    """Index in `steps` of the feature the path was asked for."""
    stop_up: PathStop | None
    """None when the path reached the last layer."""
    stop_down: PathStop | None
    """None when the path reached the first layer."""


def feature_path(lineage: LineageData, hookpoint: str, feature: int,
                 floor: float = 0.3) -> FeaturePath:
    """From (hookpoint, feature), the best partner by decoder cosine, step by step, up to the
    last layer and down to the first; a direction stops where the best cosine is < floor."""
    up, stop_up = _walk(lineage, hookpoint, feature, "up", floor)
    down, stop_down = _walk(lineage, hookpoint, feature, "down", floor)
    steps = (*reversed(down), PathStep(hookpoint, feature, None, None), *up)
    return FeaturePath(steps, len(down), stop_up, stop_down)


def _walk(lineage: LineageData, hookpoint: str, feature: int, direction: str,
          floor: float) -> tuple[list[PathStep], PathStop | None]:
    best = lineage.neighbours(hookpoint, feature, direction)  # checks the arguments
    pairs = adjacent(lineage.hookpoints)
    following = dict(pairs) if direction == "up" else {b: a for a, b in pairs}
    out: list[PathStep] = []
    while best:
        other, cos, jac = best[0]
        if cos < floor:
            return out, PathStop(following[hookpoint], cos)
        hookpoint, feature = following[hookpoint], other
        out.append(PathStep(hookpoint, feature, cos, jac))
        best = lineage.neighbours(hookpoint, feature, direction)
    return out, None
