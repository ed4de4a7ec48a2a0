"""Steering presets: concepts to steer towards, resolved to features of each atlas.

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

The result is `<atlas>/presets.json`, with a fingerprint of what it was computed from: the
atlas's SAE files (atlas/fingerprint.py), the model and a digest of the concept list. When
any of them changes, `read_presets` says None (stale) and `ensure_presets` resolves again.
In this order: the concepts, the fingerprint, the resolved presets as objects, resolving.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from ..atlas.layout import (
    PRESETS_FILE,
    LoadedAtlas,
    current_fingerprint,
    open_with,
    read_info,
    read_once,
)
from ..atlas.writing import atlas_lock
from ..atomic import read_json, write_json
from ..explore.concepts import MAX_CONCEPT_CHARS
from ..lm import load_named
from ..norms import typical_norms
from ..progress import Report
from .concept_tokens import count_mentions
from .edits import FeatureSteer, Mode, Positions, Steering, check_strength
from .effect import make_probe
from .finder import find_steering
from .generation import FEW_ROWS, GenConfig, generate, prompt_ids

CONCEPTS_FILE = Path(__file__).resolve().parents[2] / "assets" / "steering_presets.json"
PRESET_MODE: Mode = "clamp"
"""How presets steer: clamping the finder's features at its dose was the best SAE-based method
on the development half of bench/steering_judge.py (harmonic judge score 0.21 over 8
concepts x 4 prompts; adding them: 0.11, steering only the answer: 0.13; docs/steering.md)."""
SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
FORMAT_VERSION = 2
"""Of presets.json; another version is stale."""
MAX_ROWS = FEW_ROWS
"""Rows per generate call: up to here a decoding step costs about as much as one row."""


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
    stamp = fingerprint(loaded.fingerprint, loaded.info.model, concepts_digest(concepts))
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
        if not is_fresh(data.get("fingerprint"), Path(folder), read_info(folder).model,
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
            loaded = open_with(folder, load_named(read_info(folder).model))
        elif Path(loaded.folder).resolve() != folder.resolve():
            raise PresetError(f"the atlas given is {loaded.folder}, not {folder}")
        return parsed(resolve_presets(loaded, load_concepts(concepts_path),
                                       candidates=candidates, report=report))
