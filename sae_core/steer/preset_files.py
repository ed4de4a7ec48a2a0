"""What resolved presets were computed from (presets.py), and whether that still holds: the
fingerprint of the atlas's SAEs (atlas/fingerprint.py), the model and a digest of the
concept list. Any of them changed makes presets.json stale."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from ..atlas.layout import current_fingerprint

FORMAT_VERSION = 2
"""Of presets.json; another version is stale."""


def concepts_digest(concepts: Sequence) -> str:
    """sha256 of the concept list's content (PresetConcepts; formatting does not count)."""
    text = json.dumps([asdict(c) for c in concepts], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint(sae_fingerprint: str, model: str | None, concepts_sha256: str) -> dict:
    """What presets resolved on an atlas depend on."""
    return {"version": FORMAT_VERSION, "model": model, "concepts_sha256": concepts_sha256,
            "sae_fingerprint": sae_fingerprint}


def is_fresh(saved: dict | None, folder: Path, model: str | None, concepts_sha256: str) -> bool:
    """Whether a saved fingerprint still describes the atlas in `folder` and the concepts."""
    if not isinstance(saved, dict):
        return False
    return saved == fingerprint(current_fingerprint(folder), model, concepts_sha256)
