"""The steering methods compared on the same (concept, prompt) pairs (bench/steering_judge.py
and the Steering tab's comparison), all built from one finder result:
- finder: the finder's pick at its dose, added at every position;
- clamp: the same features clamped at the dose instead of added;
- answer_only: the pick, added only where the answer is written;
- prompt_steer: the concept asked for in the prompt, and the pick;
- kl_dose: the pick at KL_DOSE_STRETCH x its dose, cut token by token so that each token's
  next-token KL to the unsteered model stays under the dose rule's bound (kl_controlled.py);
- trained: a direction trained on the probe from the pick's first feature
  (trained_direction.py), at the pick's dose;
- diffmean: the difference of means at the pick's layers, dosed and text-checked as the
  finder's features (baselines.py);
- prompt: no steering, the concept asked for in the prompt;
- random: a random feature of each of the pick's layers at the pick's strengths.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from ..atlas.layout import LoadedAtlas
from ..norms import typical_norms
from ..progress import Report
from .baselines import diff_of_means, dosed_direction, prompted
from .concept_tokens import concept_token_ids
from .edits import MAX_STRENGTH, DirectionSteer, FeatureSteer, Steering
from .effect import Probe
from .finder import SteeringFinding
from .generation import GenConfig, generate, prompt_ids
from .kl_controlled import kl_controlled_text
from .trained_direction import train_direction

METHODS = ("finder", "clamp", "answer_only", "prompt_steer", "kl_dose", "trained", "diffmean",
           "prompt", "random")
ON_PLAIN_PROMPT = ("finder", "clamp", "answer_only", "trained", "diffmean", "random")
"""Methods that steer the prompt as typed: one batch writes them all."""
KL_DOSE_STRETCH = 2.0


@dataclass(frozen=True)
class MethodSteerings:
    steerings: dict[str, Steering]
    """Method -> its steering; methods without one (nothing dosed) are absent."""
    max_kl: float
    """The dose rule's KL bound, which kl_dose keeps every token under."""
    trained_s: float = 0.0


def method_steerings(loaded: LoadedAtlas, finding: SteeringFinding, probe: Probe,
                     rng: random.Random, report: Report | None = None) -> MethodSteerings:
    """Every method's steering for the finder's concept (empty without a pick); `report`
    follows the direction's training step by step."""
    best, rule = finding.best, finding.rule
    if best is None:
        return MethodSteerings({}, rule.max_kl)
    s, share, parts = best.strength, best.share, best.parts
    steer = best.steering()
    stretched = min(s * KL_DOSE_STRETCH, MAX_STRENGTH)
    out = {
        "finder": steer,
        "clamp": Steering(tuple(FeatureSteer(c.hookpoint, c.feature, s * share, "clamp")
                                for c in parts)),
        "answer_only": Steering(steer.features, positions="generated"),
        "prompt_steer": steer,
        "kl_dose": Steering(tuple(c.steer(stretched * share) for c in parts)),
        "random": Steering(tuple(FeatureSteer(f.hookpoint, rng.randrange(
            loaded.saes[f.hookpoint].cfg.d_sae), f.strength) for f in steer.features)),
    }
    hps = [c.hookpoint for c in parts]
    norms = norms_for(loaded, [steer])
    ids = concept_token_ids(loaded.lm.tokenizer, finding.words)
    t = time.perf_counter()
    first = parts[0]
    init_D = loaded.saes[first.hookpoint].W_dec[first.feature].detach().float()
    trained = train_direction(loaded.lm, loaded.saes, norms, first.hookpoint, init_D, probe,
                              ids, strength=s, max_kl=rule.max_kl, report=report)
    out["trained"] = Steering((DirectionSteer(first.hookpoint, trained.direction, s),))
    trained_s = time.perf_counter() - t
    dirs = [diff_of_means(loaded, h, finding.words) for h in hps]
    s_dm, _ = dosed_direction(loaded, hps, dirs, finding.words, probe, rule)
    if s_dm is not None:
        out["diffmean"] = Steering(tuple(DirectionSteer(h, v, s_dm * share)
                                         for h, v in zip(hps, dirs, strict=True)))
    return MethodSteerings(out, rule.max_kl, trained_s)


def norms_for(loaded: LoadedAtlas, steerings: list[Steering]) -> dict[str, float]:
    hps = sorted({f.hookpoint for r in steerings for f in r.features})
    return typical_norms(loaded.lm, loaded.saes, hps, corpus=loaded.corpus)[0] if hps else {}


def write_one_concept(loaded: LoadedAtlas, prompt: str, concept: str,
                      methods: MethodSteerings, gen: GenConfig) -> tuple[str, dict[str, str]]:
    """(the unsteered text, method -> text) for one concept on one prompt: the plain-prompt
    methods in one batch, prompting with and without the pick in another, then kl_dose."""
    st, decode = methods.steerings, loaded.lm.tokenizer.decode
    ids = prompt_ids(loaded.lm, prompt, gen)
    plain = [m for m in ON_PLAIN_PROMPT if m in st]
    norms = norms_for(loaded, list(st.values()))
    outs = generate(loaded.lm, loaded.saes, norms, ids, [None, *(st[m] for m in plain)], gen,
                    outlier_factor=loaded.outlier_factor)
    texts = {m: decode(o, skip_special_tokens=True) for m, o in zip(plain, outs[1:],
                                                                   strict=True)}
    texts.update(write_prompted(loaded, prompt, concept, methods, gen))
    if "kl_dose" in st:
        texts["kl_dose"] = write_kl_dose(loaded, prompt, methods, gen)
    return decode(outs[0], skip_special_tokens=True), texts


def write_prompted(loaded: LoadedAtlas, prompt: str, concept: str, methods: MethodSteerings,
                   gen: GenConfig) -> dict[str, str]:
    """prompt and prompt_steer: the concept asked for, without and with the pick."""
    st, decode = methods.steerings, loaded.lm.tokenizer.decode
    asked = prompt_ids(loaded.lm, prompted(prompt, concept), gen)
    rows = [None, *([st["prompt_steer"]] if "prompt_steer" in st else [])]
    outs = generate(loaded.lm, loaded.saes, norms_for(loaded, [r for r in rows if r]), asked,
                    rows, gen, outlier_factor=loaded.outlier_factor)
    names = ["prompt", "prompt_steer"][:len(outs)]
    return {m: decode(o, skip_special_tokens=True) for m, o in zip(names, outs, strict=True)}


def write_kl_dose(loaded: LoadedAtlas, prompt: str, methods: MethodSteerings,
                  gen: GenConfig) -> str:
    return kl_controlled_text(loaded, prompt, methods.steerings["kl_dose"], gen,
                              max_kl=methods.max_kl)
