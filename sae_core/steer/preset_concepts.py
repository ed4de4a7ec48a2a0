"""Steering presets as concepts (assets/steering_presets.json): a concept to steer towards
and how to show it, never a feature number (presets.py resolves them for each atlas)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

from ..explore.concepts import MAX_CONCEPT_CHARS
from .edits import FeatureSteer, Mode, Positions, Steering, check_strength
from .generation import GenConfig

CONCEPTS_FILE = Path(__file__).resolve().parents[2] / "assets" / "steering_presets.json"
PRESET_MODE: Mode = "clamp"
"""How presets steer: clamping the finder's features at its dose was the best SAE-based method
on the development half of bench/steering_judge.py (harmonic judge score 0.21 over 8
concepts x 4 prompts; adding them: 0.11, steering only the answer: 0.13; docs/steering.md)."""
SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")


class PresetError(ValueError):
    """A concept list that cannot be read or used."""


@dataclass(frozen=True)
class PresetConcept:
    """One preset as a concept: what to search for and how to show it."""

    slug: str
    """Short id used in URLs (`?preset=ocean`): lowercase letters, digits and dashes."""
    name: str
    """What the preset menu shows."""
    prompt: str
    """Written twice, with and without steering."""
    concept: str
    """The word typed into the concept search to find candidate features."""
    concept_words: tuple[str, ...]
    """Words that count as naming the concept (whole words, any case); the finder also
    measures their tokens (steer/finder.py)."""
    strength: float | None = None
    """None: the dose the finder measures on each atlas; a number (in multiples of the
    layer's typical residual norm) overrides it."""
    max_new_tokens: int = 48
    mode: Mode = PRESET_MODE
    positions: Positions = "all"
    temperature: float = 0.0
    """Of the app's run (0 = greedy); the steering check is always greedy."""
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "concept_words", tuple(self.concept_words))
        try:
            if not isinstance(self.slug, str) or not SLUG.fullmatch(self.slug):
                raise ValueError("slug must be lowercase letters, digits and dashes (<= 40)")
            for key in ("name", "prompt", "concept"):
                if not isinstance(getattr(self, key), str) or not getattr(self, key).strip():
                    raise ValueError(f"{key} must be a non-empty string")
            if len(self.concept.strip()) > MAX_CONCEPT_CHARS:
                raise ValueError(f"concept must be under {MAX_CONCEPT_CHARS} characters")
            if not self.concept_words or not all(
                    isinstance(w, str) and w.strip() for w in self.concept_words):
                raise ValueError("concept_words must be a non-empty list of words")
            for key in ("max_new_tokens", "seed"):
                if type(getattr(self, key)) is not int or getattr(self, key) < 0:
                    raise ValueError(f"{key} must be a whole number, got {getattr(self, key)!r}")
            if self.strength is not None:
                check_strength(self.strength)
            self.steering((FeatureSteer("layers.0", 0, 1.0),))  # mode and positions
            self.gen()  # max_new_tokens and temperature
        except (ValueError, TypeError) as err:
            raise PresetError(f"preset {self.slug!r}: {err}") from None

    def steering(self, features: tuple[FeatureSteer, ...]) -> Steering:
        """The features (at the strengths found for them) with this preset's mode and
        positions."""
        return Steering(tuple(replace(f, mode=self.mode) for f in features), self.positions)

    def gen(self, *, greedy: bool = False) -> GenConfig:
        return GenConfig(max_new_tokens=self.max_new_tokens,
                         temperature=0.0 if greedy else self.temperature, seed=self.seed)


CONCEPT_FIELDS = tuple(f.name for f in fields(PresetConcept))


def load_concepts(path: Path | str | None = None) -> list[PresetConcept]:
    """The presets of a concepts file (default assets/steering_presets.json), checked:
    every field known, the required ones present, slugs unique."""
    path = Path(path or CONCEPTS_FILE)
    try:
        items = json.loads(path.read_text())["presets"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise PresetError(f"cannot read presets from {path}: {err}") from None
    if not isinstance(items, list):
        raise PresetError(f"{path}: 'presets' must be a list")
    concepts = []
    for item in items:
        if not isinstance(item, dict):
            raise PresetError(f"{path}: each preset must be an object, got {item!r}")
        if unknown := set(item) - set(CONCEPT_FIELDS):
            raise PresetError(f"preset {item.get('slug')!r}: unknown fields {sorted(unknown)} "
                              "(presets name concepts, not feature numbers)")
        try:
            concepts.append(PresetConcept(**item))
        except TypeError as err:  # a required field is missing
            raise PresetError(f"preset {item.get('slug')!r}: {err}") from None
    check_unique(concepts)
    return concepts


def check_unique(concepts: Sequence[PresetConcept]) -> None:
    slugs = [c.slug for c in concepts]
    if dupes := sorted({s for s in slugs if slugs.count(s) > 1}):
        raise PresetError(f"preset slugs must be unique, repeated: {dupes}")
