"""The steering benchmark's concepts and prompts, split once into a development half and a
test half (assets/steering_concepts.json).

Everything a steering method is tuned on (the finder's rules and doses, the judge's cut
points, the choice of a preset's method) reads the development half; the test half is
scored once per version and reported, never used for a decision. A score tuned and reported
on the same concepts is a training score (issue 27: the old finder's 0.534).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SPLIT_FILE = Path(__file__).resolve().parents[2] / "assets" / "steering_concepts.json"
Half = Literal["dev", "test"]


@dataclass(frozen=True)
class ConceptHalf:
    name: Half
    prompts: tuple[str, ...]
    concepts: dict[str, tuple[str, ...]]
    """Concept -> the whole words that name it."""


def load_half(name: Half, path: Path = SPLIT_FILE) -> ConceptHalf:
    """One half of the split, as committed."""
    if name not in ("dev", "test"):
        raise ValueError(f"the split has halves 'dev' and 'test', not {name!r}")
    raw = json.loads(path.read_text(encoding="utf-8"))[name]
    concepts = {c: tuple(words) for c, words in raw["concepts"].items()}
    if empty := [c for c, words in concepts.items() if not words]:
        raise ValueError(f"{path}: concepts without words: {empty}")
    return ConceptHalf(name, tuple(raw["prompts"]), concepts)
