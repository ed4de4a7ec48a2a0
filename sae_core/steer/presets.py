"""Steering presets stored as concepts, resolved to features of each atlas.

A preset (assets/steering_presets.json) names a concept ("ocean"), its words and how to show
it (prompt, mode, ...), never a feature number: builds on other CPUs number features
differently. For an atlas, the same finder a visitor uses in the Steering tab (finder.py)
proposes the recipes it tried by text, each at its strength, its recommendation first. One
short greedy steering run on the preset's prompt checks them: the first, in the finder's
order, whose text names the concept more often than the unsteered text (whole-word,
case-insensitive count of its concept words) is kept. A preset none of whose options does
is `failed`: kept with its reason, shown nowhere. Options of presets that share a prompt
and length are rows of the same batches, next to one unsteered row (generation.py edits
each row on its own).

The result is `<atlas>/presets.json`, with a fingerprint of the SAE files and the concept
list it came from: when either changes, `read_presets` says None (stale) and
`ensure_presets` resolves again.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from ..atlas.layout import PRESETS_FILE, LoadedAtlas, open_with, read_info, read_once
from ..atlas.writing import atlas_lock
from ..atomic import read_json, write_json
from ..lm import load_named
from ..norms import typical_norms
from ..progress import Report
from .concept_tokens import count_mentions
from .edits import Steering
from .effect import make_probe
from .finder import find_steering
from .generation import FEW_ROWS, GenConfig, generate, prompt_ids
from .preset_concepts import (
    CONCEPTS_FILE,
    PresetConcept,
    PresetError,
    check_unique,
    load_concepts,
)
from .preset_files import concepts_digest, fingerprint, is_fresh
from .preset_results import FailedPreset, ResolvedPreset, ResolvedPresets, parsed

__all__ = ["CONCEPTS_FILE", "PRESETS_FILE", "FailedPreset", "PresetConcept", "PresetError",
           "ResolvedPreset", "ResolvedPresets", "count_mentions", "ensure_presets", "is_preparing",
           "load_concepts", "read_presets", "resolve_presets"]

MAX_ROWS = FEW_ROWS
"""Rows per generate call: up to here a decoding step costs about as much as one row."""


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


def _options(loaded: LoadedAtlas, c: PresetConcept, probe, n: int
             ) -> tuple[list[Steering], str]:
    """(the recipes the finder tried by text, in its order of preference, its recommendation
    first, each at the strength tried or at the preset's own strength when it sets one, at
    most n; why there are none)."""
    try:
        finding = find_steering(loaded, c.concept, c.concept_words, probe=probe)
    except ValueError as err:  # e.g. words this tokenizer cannot write
        return [], str(err)
    # one row per recipe and strength (a preset's own strength makes a recipe's trials one)
    rows = list({(c.strength is None and o.strength, o.name):
                 c.steering(o.steering(c.strength).features) for o, _ in finding.trials}.values())
    why = ("" if rows else "the finder found no feature that steers towards "
           f"{c.concept!r} near its fluency bound")
    return rows[:n], why


def _steering_checks(loaded: LoadedAtlas, concepts: Sequence[PresetConcept],
                     options: dict[str, list[Steering]], report: Report,
                     ) -> dict[str, tuple[str | None, list[str]]]:
    """Per slug: (unsteered text, steered text of each option), greedy. Presets with the
    same prompt and length share batches and one unsteered row."""
    groups: dict[tuple[str, int], list[PresetConcept]] = {}
    for c in concepts:
        groups.setdefault((c.prompt, c.max_new_tokens), []).append(c)
    out: dict[str, tuple[str | None, list[str]]] = {}
    for i, ((prompt, _), members) in enumerate(groups.items()):
        report(f"steering check {i + 1}/{len(groups)}: {prompt!r}", 0.6 + 0.4 * i / len(groups))
        rows: list[Steering | None] = [None] + [s for c in members for s in options[c.slug]]
        texts = (_texts_of_rows(loaded, prompt, rows, members[0].gen(greedy=True))
                 if len(rows) > 1 else [None])  # no option: nothing to compare with
        k = 1
        for c in members:
            out[c.slug] = (texts[0], texts[k:k + len(options[c.slug])])
            k += len(options[c.slug])
    return out


def _recipe(steering: Steering) -> list[dict]:
    return [{"hookpoint": f.hookpoint, "layer": f.layer, "feature": f.feature,
             "strength": f.strength} for f in steering.features]


def _entry(c: PresetConcept, options: list[Steering], why: str, unsteered: str | None,
           steered: list[str]) -> dict:
    """One preset of presets.json: its concept, the option kept and what was measured."""
    entry = asdict(c) | {"concept_words": list(c.concept_words), "features": [],
                         "mentions": None, "steered_text": None, "unsteered_text": unsteered,
                         "candidates": []}
    if not options:
        return entry | {"status": "failed", "reason": why}
    counts = [count_mentions(t, c.concept_words) for t in steered]
    plain = count_mentions(unsteered, c.concept_words)
    kept = next((i for i, n in enumerate(counts) if n > plain), None)
    shown = 0 if kept is None else kept
    return entry | {
        "status": "ok" if kept is not None else "failed",
        "reason": "" if kept is not None else (
            f"no option named the concept more than the unsteered text ({max(counts)} vs "
            f"{plain} mentions)"),
        "features": _recipe(options[shown]),
        "mentions": {"steered": counts[shown], "unsteered": plain},
        "steered_text": steered[shown],
        "candidates": [{"features": _recipe(o), "mentions": n, "text": t}
                       for o, n, t in zip(options, counts, steered, strict=True)]}


def resolve_presets(loaded: LoadedAtlas, concepts: Sequence[PresetConcept], *,
                    candidates: int = 4, report: Report | None = None) -> dict:
    """Find each concept's recipe on this atlas (see the module doc), write
    `<atlas>/presets.json` atomically and return what it holds. The SAEs in `loaded` must be
    the ones in its folder (the fingerprint reads the files)."""
    check_unique(concepts)
    if candidates < 1:
        raise PresetError(f"candidates must be >= 1, got {candidates}")
    report = report or (lambda message, fraction: None)
    t0 = time.perf_counter()
    # stamped first: files rewritten while this runs make the result stale, not wrong
    stamp = fingerprint(loaded.fingerprint, loaded.info.get("model"), concepts_digest(concepts))
    probe, options, why = make_probe(loaded.lm), {}, {}
    for i, c in enumerate(concepts):
        report(f"finding features for {c.concept!r}", 0.6 * i / max(len(concepts), 1))
        options[c.slug], why[c.slug] = _options(loaded, c, probe, candidates)
    texts = _steering_checks(loaded, concepts, options, report)
    result = {
        "fingerprint": stamp, "candidates": candidates,
        "seconds": round(time.perf_counter() - t0, 1),
        "presets": [_entry(c, options[c.slug], why[c.slug], *texts[c.slug])
                    for c in concepts]}
    with atlas_lock(loaded.folder):
        write_json(Path(loaded.folder) / PRESETS_FILE, result)
    report("presets ready", 1.0)
    return result


def read_presets(folder: Path | str | None, *,
                 concepts_path: Path | str | None = None) -> ResolvedPresets | None:
    """The atlas's resolved presets; None when never resolved, or stale: its SAE files, its
    model or the concept list (default assets/steering_presets.json) changed since."""
    if not folder or not (Path(folder) / PRESETS_FILE).exists():
        return None
    digest = concepts_digest(load_concepts(concepts_path))
    path = Path(folder) / PRESETS_FILE
    try:
        data = read_once(path, lambda: read_json(path))
        if not is_fresh(data.get("fingerprint"), Path(folder), read_info(folder).get("model"),
                        digest):
            return None
        return parsed(data)
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
                   candidates: int = 4) -> ResolvedPresets:
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
        return parsed(resolve_presets(loaded, load_concepts(concepts_path),
                                       candidates=candidates, report=report))
