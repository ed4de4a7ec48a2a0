"""What an atlas's presets.json holds, as objects: the presets that steer and those left out."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .edits import FeatureSteer, Steering
from .preset_concepts import CONCEPT_FIELDS, PresetConcept


@dataclass(frozen=True)
class ResolvedPreset:
    """A preset that steers visibly on one atlas."""

    concept: PresetConcept
    features: tuple[FeatureSteer, ...]
    """The recipe kept: one feature, or the finder's combination of several layers."""
    mentions: int
    """Concept words in the steered text of the greedy check."""
    mentions_unsteered: int
    """Concept words in the unsteered text (always fewer)."""
    steered_text: str
    unsteered_text: str

    @property
    def slug(self) -> str:
        return self.concept.slug

    @property
    def name(self) -> str:
        return self.concept.name

    @property
    def hookpoint(self) -> str:
        return self.features[0].hookpoint

    @property
    def feature(self) -> int:
        return self.features[0].feature

    @property
    def layer(self) -> int:
        return self.features[0].layer

    @property
    def strength(self) -> float:
        return self.features[0].strength

    @property
    def extra(self) -> str:
        """The features after the first, as the tab's "layer:feature:strength, ..." text."""
        return ", ".join(f"{f.layer}:{f.feature}:{f.strength:.4g}" for f in self.features[1:])

    def steering(self) -> Steering:
        return self.concept.steering(self.features)


@dataclass(frozen=True)
class FailedPreset:
    """A preset left out on one atlas, and why."""

    concept: PresetConcept
    reason: str

    @property
    def note(self) -> str:
        return f"{self.concept.name}: {self.reason}"


@dataclass(frozen=True)
class ResolvedPresets:
    """An atlas's presets as `read_presets` gives them."""

    presets: tuple[ResolvedPreset, ...]
    """The presets that steer visibly, in the concept file's order."""
    failed: tuple[FailedPreset, ...]
    """The presets left out (no candidate, or none named the concept more than no steering)."""

    def get(self, slug: str | None) -> ResolvedPreset | None:
        return next((p for p in self.presets if p.slug == slug), None)


def parsed(data: dict) -> ResolvedPresets:
    """The presets of a presets.json (read_presets checks it is fresh first)."""
    ok, failed = [], []
    for e in data["presets"]:
        concept = PresetConcept(**{k: e[k] for k in CONCEPT_FIELDS})
        if e["status"] != "ok":
            failed.append(FailedPreset(concept, e["reason"]))
            continue
        features = tuple(FeatureSteer(f["hookpoint"], int(f["feature"]), float(f["strength"]))
                         for f in e["features"])
        ok.append(ResolvedPreset(concept, tuple(replace(f, mode=concept.mode)
                                                for f in features),
                                 e["mentions"]["steered"], e["mentions"]["unsteered"],
                                 e["steered_text"], e["unsteered_text"]))
    return ResolvedPresets(tuple(ok), tuple(failed))
