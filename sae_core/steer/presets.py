"""Steering presets stored as concepts, resolved to features of each atlas.

A preset (assets/steering_presets.json) names a concept ("ocean") and how to show it (prompt,
strength, ...), never a feature number: builds on other CPUs number features differently.
For an atlas, the concept search (explore/concepts.py) proposes candidates, and one short
greedy steering run on the preset's prompt keeps the candidate whose text names the concept
most (whole-word, case-insensitive count of its concept words). A preset whose best text
names the concept no more than the unsteered text is `failed`: kept with its reason, shown
nowhere. Candidates of presets that share a prompt and length are rows of the same batches,
next to one unsteered row (generation.py edits each row on its own).

The result is `<atlas>/presets.json`, with a fingerprint of the SAE files and the concept
list it came from: when either changes, `read_presets` says None (stale) and
`ensure_presets` resolves again.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..atlas.layout import PRESETS_FILE, LoadedAtlas, open_with, read_info, read_once
from ..explore.concepts import ConceptHit, find_concept_features
from ..lm import load_named
from ..norms import typical_norms
from ..progress import Report
from .edits import Steering
from .generation import FEW_ROWS, GenConfig, generate, prompt_ids
from .preset_concepts import (
    CONCEPT_FIELDS,
    CONCEPTS_FILE,
    PresetConcept,
    PresetError,
    check_unique,
    count_mentions,
    load_concepts,
)
from .preset_files import concepts_digest, fingerprint, is_fresh, write_json_atomic

__all__ = ["CONCEPTS_FILE", "PRESETS_FILE", "FailedPreset", "PresetConcept", "PresetError",
           "ResolvedPreset", "ResolvedPresets", "count_mentions", "ensure_presets", "is_preparing",
           "load_concepts", "read_presets", "resolve_presets"]

MAX_ROWS = FEW_ROWS
"""Rows per generate call: up to here a decoding step costs about as much as one row."""


@dataclass(frozen=True)
class ResolvedPreset:
    """A preset that steers visibly on one atlas."""

    concept: PresetConcept
    hookpoint: str
    feature: int
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
    def layer(self) -> int:
        return self.steering().features[0].layer

    def steering(self) -> Steering:
        return self.concept.steering(self.hookpoint, self.feature)


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


def _texts_of_rows(loaded: LoadedAtlas, prompt: str, rows: list[Steering | None],
                   gen: GenConfig) -> list[str]:
    """The decoded continuation of each row, in as few batches of <= MAX_ROWS as fit."""
    ids_P = prompt_ids(loaded.lm, prompt, gen)
    hookpoints = sorted({f.hookpoint for r in rows if r for f in r.features})
    norms, _ = typical_norms(loaded.lm, loaded.saes, hookpoints, corpus=loaded.corpus)
    size = math.ceil(len(rows) / math.ceil(len(rows) / MAX_ROWS))  # balanced batches
    texts = []
    for start in range(0, len(rows), size):
        new = generate(loaded.lm, loaded.saes, norms, ids_P, rows[start:start + size], gen,
                       outlier_factor=loaded.outlier_factor)
        texts += [loaded.lm.tokenizer.decode(t, skip_special_tokens=True) for t in new]
    return texts


def _steering_checks(loaded: LoadedAtlas, concepts: Sequence[PresetConcept],
                     hits: dict[str, list[ConceptHit]], report: Report,
                     ) -> dict[str, tuple[str | None, list[str]]]:
    """Per slug: (unsteered text, steered text of each candidate), greedy. Presets with the
    same prompt and length share batches and one unsteered row."""
    groups: dict[tuple[str, int], list[PresetConcept]] = {}
    for c in concepts:
        groups.setdefault((c.prompt, c.max_new_tokens), []).append(c)
    out: dict[str, tuple[str | None, list[str]]] = {}
    for i, ((prompt, _), members) in enumerate(groups.items()):
        report(f"steering check {i + 1}/{len(groups)}: {prompt!r}", 0.4 + 0.6 * i / len(groups))
        rows: list[Steering | None] = [None] + [c.steering(h.hookpoint, h.feature)
                                                for c in members for h in hits[c.slug]]
        texts = (_texts_of_rows(loaded, prompt, rows, members[0].gen(greedy=True))
                 if len(rows) > 1 else [None])  # no candidate: nothing to compare with
        k = 1
        for c in members:
            out[c.slug] = (texts[0], texts[k:k + len(hits[c.slug])])
            k += len(hits[c.slug])
    return out


def _entry(c: PresetConcept, hits: list[ConceptHit], unsteered: str | None,
           steered: list[str]) -> dict:
    """One preset of presets.json: its concept, the candidate kept and what was measured."""
    entry = asdict(c) | {"concept_words": list(c.concept_words), "hookpoint": None,
                         "layer": None, "feature": None, "mentions": None,
                         "steered_text": None, "unsteered_text": unsteered, "candidates": []}
    if not hits:
        return entry | {"status": "failed", "reason": "the concept search found no feature "
                        f"for {c.concept!r}"}
    counts = [count_mentions(t, c.concept_words) for t in steered]
    plain = count_mentions(unsteered, c.concept_words)
    best = max(range(len(hits)), key=lambda i: (counts[i], -i))  # ties: the search's order
    ok = counts[best] > plain
    return entry | {
        "status": "ok" if ok else "failed",
        "reason": "" if ok else (f"no candidate named the concept more than the unsteered "
                                 f"text ({counts[best]} vs {plain} mentions)"),
        "hookpoint": hits[best].hookpoint, "layer": hits[best].layer,
        "feature": hits[best].feature,
        "mentions": {"steered": counts[best], "unsteered": plain},
        "steered_text": steered[best],
        "candidates": [{"hookpoint": h.hookpoint, "layer": h.layer, "feature": h.feature,
                        "score": h.score, "mentions": n, "text": t}
                       for h, n, t in zip(hits, counts, steered, strict=True)]}


def resolve_presets(loaded: LoadedAtlas, concepts: Sequence[PresetConcept], *,
                    candidates: int = 6, report: Report | None = None) -> dict:
    """Find each concept's feature on this atlas (see the module doc), write
    `<atlas>/presets.json` atomically and return what it holds. The SAEs in `loaded` must be
    the ones in its folder (the fingerprint reads the files)."""
    check_unique(concepts)
    if candidates < 1:
        raise PresetError(f"candidates must be >= 1, got {candidates}")
    report = report or (lambda message, fraction: None)
    t0 = time.perf_counter()
    # stamped first: files rewritten while this runs make the result stale, not wrong
    stamp = fingerprint(loaded.folder, loaded.hookpoints, loaded.info.get("model"),
                        concepts_digest(concepts))
    hits = {}
    for i, c in enumerate(concepts):
        report(f"finding features for {c.concept!r}", 0.4 * i / max(len(concepts), 1))
        hits[c.slug] = find_concept_features(loaded, c.concept, top=candidates)
    texts = _steering_checks(loaded, concepts, hits, report)
    result = {
        "fingerprint": stamp, "candidates": candidates,
        "seconds": round(time.perf_counter() - t0, 1),
        "presets": [_entry(c, hits[c.slug], *texts[c.slug]) for c in concepts]}
    write_json_atomic(Path(loaded.folder) / PRESETS_FILE, result)
    report("presets ready", 1.0)
    return result


def _parsed(data: dict) -> ResolvedPresets:
    ok, failed = [], []
    for e in data["presets"]:
        concept = PresetConcept(**{k: e[k] for k in CONCEPT_FIELDS})
        if e["status"] != "ok":
            failed.append(FailedPreset(concept, e["reason"]))
            continue
        ok.append(ResolvedPreset(concept, e["hookpoint"], int(e["feature"]),
                                 e["mentions"]["steered"], e["mentions"]["unsteered"],
                                 e["steered_text"], e["unsteered_text"]))
    return ResolvedPresets(tuple(ok), tuple(failed))


def read_presets(folder: Path | str | None, *,
                 concepts_path: Path | str | None = None) -> ResolvedPresets | None:
    """The atlas's resolved presets; None when never resolved, or stale: its SAE files, its
    model or the concept list (default assets/steering_presets.json) changed since."""
    if not folder or not (Path(folder) / PRESETS_FILE).exists():
        return None
    digest = concepts_digest(load_concepts(concepts_path))
    path = Path(folder) / PRESETS_FILE
    try:
        data = read_once(path, lambda: json.loads(path.read_text()))
        info = read_info(folder)
        if not is_fresh(data.get("fingerprint"), Path(folder), info["hookpoints"],
                        info.get("model"), digest):
            return None
        return _parsed(data)
    except (OSError, ValueError, KeyError, TypeError):  # unreadable: resolve again
        return None


_locks: dict[Path, threading.Lock] = {}
_locks_lock = threading.Lock()


def _lock_of(folder: Path) -> threading.Lock:
    with _locks_lock:
        return _locks.setdefault(Path(folder).resolve(), threading.Lock())


def is_preparing(folder: Path | str | None) -> bool:
    """Whether `ensure_presets` is resolving this atlas's presets right now."""
    return bool(folder) and _lock_of(Path(folder)).locked()


def ensure_presets(folder: Path | str, loaded: LoadedAtlas | None = None,
                   report: Report | None = None, *, concepts_path: Path | str | None = None,
                   candidates: int = 6) -> ResolvedPresets:
    """The atlas's presets, resolved only when missing or stale; one resolution per folder
    at a time (a second caller waits for it). `loaded`: the atlas already in memory."""
    folder = Path(folder)
    with _lock_of(folder):
        if (done := read_presets(folder, concepts_path=concepts_path)) is not None:
            return done
        if loaded is None:
            loaded = open_with(folder, load_named(read_info(folder)["model"]))
        elif Path(loaded.folder).resolve() != folder.resolve():
            raise PresetError(f"the atlas given is {loaded.folder}, not {folder}")
        return _parsed(resolve_presets(loaded, load_concepts(concepts_path),
                                       candidates=candidates, report=report))
