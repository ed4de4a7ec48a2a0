"""Find features that steer towards a concept, chosen by what they do to the output.

1. Candidates: the features that fire on the concept's word (explore/concepts.py, the input
   side) and the features whose decoder direction most promotes the concept's tokens through
   the logit lens (z-score within the direction's scores over the vocabulary).
2. Each candidate is pushed at the PROBE_STRENGTHS on the probe's neutral prompts
   (effect.py, one batched forward per prompt and layer group) and ranked by effect for the
   cost: its *reach*, the highest concept probability it attains with KL within the dose
   rule's bound. Also shown: efficiency = log(P_s / P_0) / sqrt(KL) at the first strength,
   the rise in the concept's log-probability per unit of fluency cost (to first order in s,
   both rise like s). Efficiency alone misleads: from P_0 = 1e-6 a feature that reaches 1e-4
   looks efficient and makes no text name the concept (measured: the "birds" candidates).
3. The best candidates get a dose curve (dose.py); so does a combination of the best
   features of different layers, the dose shared (each at strength s / sqrt(k), so k roughly
   orthogonal directions add up to the length of one at s).
4. Each dosed option, at its dose and at the next strength of the grid that keeps KL within
   the bound, writes a short greedy text on every probe prompt (text_check.py); an option
   without a dose does so at its strongest strength within STRETCH x the bound. The
   recommendation is the trial whose texts name the concept on the most prompts, then
   loop least, then cost the least KL (it may lie past the bound; the app says so).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

import torch

from ..activations import layer_of
from ..atlas.layout import LoadedAtlas
from ..errors import BadInput, check_layer_range
from ..explore.concepts import find_concept_features
from ..explore.logit_lens import token_zscores
from ..norms import typical_norms
from ..progress import Report
from .concept_tokens import concept_token_ids, concept_words
from .dose import STRENGTHS, DoseCurve, DoseRule, trial_strengths
from .edits import FeatureSteer, Steering
from .effect import Effect, Probe, make_probe, pushed_effects
from .text_check import TextCheck, by_preference, check_texts

PROBE_STRENGTHS = (0.3, 0.6)
INPUT_CANDIDATES = 8
LENS_CANDIDATES = 16
LENS_PER_LAYER = 2
DOSED = 3
"""Candidates that get a dose curve."""
COMBINED = 3
"""Features of different layers in the combination."""
BF16 = True
"""The pushed measures in bf16 where native (~1.6x faster on a 2-core AVX-512 CPU; KL moved
by at most 0.05 nats, concept probability by 0.002, over the 246 rows of three development
concepts)."""
FIRES, PROMOTES = "fires on the word", "promotes the word"


@dataclass(frozen=True)
class Candidate:
    hookpoint: str
    feature: int
    source: str
    """FIRES, PROMOTES or both (joined by " + ")."""
    lens_z: float
    """Logit-lens z-score of its most promoted concept token."""
    effects: tuple[Effect, ...]
    """Pushed at each of PROBE_STRENGTHS."""
    reach: float
    """The highest concept probability among them with KL within the bound (0: none)."""
    efficiency: float
    """log(P_s / P_0) / sqrt(KL) at the first probe strength (see the module doc)."""

    @property
    def layer(self) -> int:
        return layer_of(self.hookpoint)

    def steer(self, strength: float) -> FeatureSteer:
        return FeatureSteer(self.hookpoint, self.feature, strength)


@dataclass(frozen=True)
class Option:
    """A steering recipe, its dose curve and the strength it is run at."""

    name: str
    parts: tuple[Candidate, ...]
    curve: DoseCurve
    strength: float | None
    """The dose; without one, the strength with the most concept probability within the KL
    bound (DoseCurve.strength), or the strength of a text-checked trial; None: nothing stays
    within the bound."""

    @property
    def share(self) -> float:
        """Each part's strength per unit of the recipe's strength."""
        return _share(len(self.parts))

    def steering(self, strength: float | None = None) -> Steering:
        """The recipe at `strength` (default: its own) shared among its parts."""
        s = self.strength if strength is None else strength
        if s is None:
            raise ValueError(f"{self.name} moves the text too far at every strength tried")
        return Steering(tuple(c.steer(s * self.share) for c in self.parts))

    @property
    def effect(self) -> Effect | None:
        """Measured at `strength`."""
        return None if self.strength is None else self.curve.effect_at(self.strength)


@dataclass(frozen=True)
class SteeringFinding:
    concept: str
    words: tuple[str, ...]
    token_ids: tuple[int, ...]
    p0: float
    """Concept probability without steering, on the probe."""
    candidates: tuple[Candidate, ...]
    """Best first."""
    options: tuple[Option, ...]
    """The best candidates alone, then the combination (if any), each with its dose curve."""
    best: Option | None
    """The recommendation, at the strength chosen (see the module doc); None: nothing stays
    within the KL bound."""
    rule: DoseRule
    trials: tuple[tuple[Option, TextCheck], ...] = ()
    """The options at the strengths their texts were checked at, with the checks, in order
    of preference (`best` first)."""


def _share(k: int) -> float:
    return 1.0 / math.sqrt(k)


def _lens_scores(loaded: LoadedAtlas, hookpoints: Sequence[str], ids: torch.Tensor
                 ) -> dict[str, torch.Tensor]:
    """Per hookpoint, (S,) each feature's logit-lens z-score of its most promoted concept
    token."""
    return {h: token_zscores(loaded.lm, loaded.saes[h].W_dec.detach(), ids).amax(-1).cpu()
            for h in hookpoints}


def _lens_candidates(z_by_hookpoint: dict[str, torch.Tensor]) -> list[tuple[float, str, int]]:
    found = []
    for h, z_S in z_by_hookpoint.items():
        vals, feats = z_S.topk(min(LENS_PER_LAYER, len(z_S)))
        found += [(float(v), h, int(f)) for v, f in zip(vals, feats, strict=True)]
    return sorted(found, key=lambda x: -x[0])[:LENS_CANDIDATES]


def _gather(loaded: LoadedAtlas, word: str, ids: torch.Tensor, hookpoints: Sequence[str],
            layers: tuple[int, int] | None) -> tuple[dict, dict]:
    """({(hookpoint, feature): [why it is a candidate]}, {(hookpoint, feature): lens z})."""
    sources: dict[tuple[str, int], list[str]] = {}
    for hit in find_concept_features(loaded, word, top=INPUT_CANDIDATES, layers=layers):
        sources.setdefault((hit.hookpoint, hit.feature), []).append(FIRES)
    z_by_hookpoint = _lens_scores(loaded, hookpoints, ids)
    for _z, h, f in _lens_candidates(z_by_hookpoint):
        sources.setdefault((h, f), []).append(PROMOTES)
    return sources, {(h, f): float(z_by_hookpoint[h][f]) for h, f in sources}


def _candidate(h: str, f: int, sources: dict, lens_z: dict, effects: tuple[Effect, ...],
               p0: float, rule: DoseRule) -> Candidate:
    reach = max((e.concept_prob for e in effects if e.kl <= rule.max_kl), default=0.0)
    return Candidate(h, f, " + ".join(sources[(h, f)]), round(lens_z[(h, f)], 2), effects,
                     reach, efficiency(effects[0], p0))


def efficiency(effect: Effect, p0: float) -> float:
    """log(P_s / P_0) / sqrt(KL): concept log-probability gained per unit of fluency cost."""
    lift = math.log(max(effect.concept_prob, 1e-12) / max(p0, 1e-12))
    return lift / math.sqrt(max(effect.kl, 1e-8))


def _combination(ranked: Sequence[Candidate]) -> tuple[Candidate, ...]:
    chosen, layers = [], set()
    for c in ranked:
        if c.reach > 0 and c.layer not in layers:
            chosen.append(c)
            layers.add(c.layer)
        if len(chosen) == COMBINED:
            break
    return tuple(chosen) if len(chosen) > 1 else ()


def find_steering(loaded: LoadedAtlas, concept: str, related: Iterable[str] | str = (), *,
                  layers: tuple[int, int] | None = None, rule: DoseRule | None = None,
                  probe: Probe | None = None, report: Report | None = None
                  ) -> SteeringFinding:
    """Candidates for `concept` ranked by their pushed effect, and the best recipe dosed."""
    rule = rule or DoseRule()
    report = report or (lambda message, fraction, **_: None)
    words = concept_words(concept, related)
    layers = check_layer_range(layers)
    ids = concept_token_ids(loaded.lm.tokenizer, words)
    hookpoints = [h for h in loaded.saes
                  if layers is None or layers[0] <= layer_of(h) <= layers[1]]
    if not hookpoints:
        raise BadInput("layers", f"no layer of this SAE set lies in {layers[0]}..{layers[1]}")
    report("finding candidates", 0.0)
    sources, lens_z = _gather(loaded, words[0], ids, hookpoints, layers)
    keys = list(sources)
    norms, _ = typical_norms(loaded.lm, loaded.saes, sorted({h for h, _ in keys}),
                             corpus=loaded.corpus)
    probe = probe or make_probe(loaded.lm)

    measure = _measurer(loaded, norms, probe, ids)

    report(f"pushing {len(keys)} candidates", 0.2)
    n = len(PROBE_STRENGTHS)
    p0, effects = measure([Steering((FeatureSteer(h, f, s),)) for h, f in keys
                           for s in PROBE_STRENGTHS])
    ranked = sorted((_candidate(h, f, sources, lens_z, tuple(effects[i * n:(i + 1) * n]), p0,
                                rule) for i, (h, f) in enumerate(keys)),
                    key=lambda c: (-c.reach, -c.efficiency))
    recipes = [(f"layer {c.layer} #{c.feature}", (c,)) for c in ranked[:DOSED]]
    if combo := _combination(ranked):
        recipes.append((" + ".join(f"{c.layer}#{c.feature}" for c in combo), combo))
    report("measuring doses", 0.6)
    grid = tuple(STRENGTHS)
    rows = [Steering(tuple(c.steer(s * _share(len(parts))) for c in parts))
            for _, parts in recipes for s in grid]
    _, curve_effects = measure(rows)
    options = []
    for i, (name, parts) in enumerate(recipes):
        curve = DoseCurve.of(grid, curve_effects[i * len(grid):(i + 1) * len(grid)], p0, rule)
        options.append(Option(name, parts, curve, curve.strength(rule)))
    report("checking texts", 0.8)
    trials = _trials(options, rule)
    checks = check_texts(loaded, norms, probe.prompts, [t.steering() for t in trials],
                         words) if trials else []
    order = by_preference(checks, [t.effect for t in trials])
    checked = tuple((trials[i], checks[i]) for i in order)
    report("done", 1.0)
    return SteeringFinding(words[0], words, tuple(ids.tolist()), p0, tuple(ranked),
                           tuple(options), checked[0][0] if checked else None, rule, checked)


def _measurer(loaded: LoadedAtlas, norms: dict[str, float], probe: Probe, ids: torch.Tensor
              ) -> Callable[[list[Steering]], tuple[float, list[Effect]]]:
    """measure(rows) -> (p0, each row's effect); rows measured before (a dose curve passes
    through the candidates' probe strengths) are not measured again."""
    measured: dict[Steering | None, float | Effect] = {}  # None: the unsteered p0

    def measure(rows: list[Steering]) -> tuple[float, list[Effect]]:
        if new := list(dict.fromkeys(r for r in rows if r not in measured)):
            measured[None], effects = pushed_effects(
                loaded.lm, loaded.saes, norms, probe, new, ids,
                outlier_factor=loaded.outlier_factor, bf16=BF16)
            measured.update(zip(new, effects, strict=True))
        return measured[None], [measured[r] for r in rows]

    return measure


def _trials(options: Sequence[Option], rule: DoseRule) -> list[Option]:
    return [replace(o, strength=s) for o in options for s in trial_strengths(o.curve, rule)]
