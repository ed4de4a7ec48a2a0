"""Steering methods judged as AxBench judges them, tuned on one half of the concepts and
scored on the other (issue 27).

Stages (each writes bench/out/ files the next reads):
  generate --half dev|test   every method's text for every concept x prompt of the half
  fit                         the judge's cut points from the development half's hand labels
  score                       the judge on the test half: the RESULT line

Methods, on the same (concept, prompt) pairs, greedy, 48 new tokens:
- finder: the concept finder's pick (steer/finder.py) at its dose, added at every position;
- clamp: the same features clamped at the dose instead of added;
- answer_only: the pick, added only where the answer is written;
- prompt_steer: the concept asked for in the prompt, and the pick;
- kl_dose: the pick at twice its dose, cut token by token to keep the next-token KL to the
  unsteered model under the dose rule's bound (steer/kl_controlled.py);
- trained: a direction trained on the probe from the pick's first feature
  (steer/trained_direction.py) at the pick's dose;
- diffmean: the difference of means at the pick's layers (32+ sentences a side), dosed and
  text-checked as the finder's features;
- prompt: no steering, the concept asked for in the prompt;
- random: a random feature of the pick's layers at the pick's strengths.
The score of a text is the harmonic mean of the judge's concept, instruction and fluency
scores (0-2); a method's score is its mean over pairs, with a bootstrap interval over
concepts (pairs resampled by concept).

    flock /tmp/bench.lock .venv/bin/python bench/steering_judge.py generate --half test
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from sae_core.atlas.layout import DEFAULT_ATLAS
from sae_core.norms import typical_norms
from sae_core.steer.baselines import diff_of_means, dosed_direction, prompted
from sae_core.steer.concept_split import load_half
from sae_core.steer.concept_tokens import concept_token_ids
from sae_core.steer.edits import DirectionSteer, FeatureSteer, Steering
from sae_core.steer.effect import make_probe
from sae_core.steer.finder import find_steering
from sae_core.steer.generation import GenConfig, generate, prompt_ids
from sae_core.steer.judge import (
    CUTS,
    Cuts,
    Judge,
    Signals,
    grade,
    keyword_grade,
    load_judge,
)
from sae_core.steer.kl_controlled import generate_kl_controlled
from sae_core.steer.trained_direction import train_direction

OUT = Path("bench/out")
LABELS = Path("assets/steering_judge_labels.json")
METHODS = ("finder", "clamp", "answer_only", "prompt_steer", "kl_dose", "trained", "diffmean",
           "prompt", "random")
BATCHED = ("finder", "clamp", "answer_only", "trained", "diffmean", "random")
"""Methods steered on the plain prompt: one batch per prompt for every concept."""
KL_DOSE_STRETCH = 2.0
BOOTSTRAP = 2000


def texts_file(half: str) -> Path:
    return OUT / f"steering_texts_{half}.json"


# --- generate -------------------------------------------------------------------------


def _picks(loaded, concept: str, words, probe, rng) -> dict:
    """Each method's steering for one concept (None: the method has nothing to steer with)."""
    t = time.perf_counter()
    finding = find_steering(loaded, concept, words, probe=probe)
    finder_s = time.perf_counter() - t
    best = finding.best
    if best is None:
        return {"finder_s": finder_s, "name": None}
    s, share = best.strength, best.share
    parts = best.parts
    hps = [c.hookpoint for c in parts]
    steer = best.steering()
    picks = {
        "finder": steer,
        "clamp": Steering(tuple(FeatureSteer(c.hookpoint, c.feature, s * share, "clamp")
                                for c in parts)),
        "answer_only": Steering(steer.features, positions="generated"),
        "prompt_steer": steer,
        "kl_dose": Steering(tuple(c.steer(min(s * KL_DOSE_STRETCH, 20.0) * share)
                                  for c in parts)),
        "random": Steering(tuple(FeatureSteer(f.hookpoint, rng.randrange(
            loaded.saes[f.hookpoint].cfg.d_sae), f.strength) for f in steer.features)),
    }
    norms, _ = typical_norms(loaded.lm, loaded.saes, hps, corpus=loaded.corpus)
    ids = concept_token_ids(loaded.lm.tokenizer, words)
    t = time.perf_counter()
    first = parts[0]
    trained = train_direction(loaded.lm, loaded.saes, norms, first.hookpoint,
                              loaded.saes[first.hookpoint].W_dec[first.feature].detach().float(),
                              probe, ids, strength=s, max_kl=finding.rule.max_kl)
    picks["trained"] = Steering((DirectionSteer(first.hookpoint, trained.direction, s),))
    trained_s = time.perf_counter() - t
    dirs = [diff_of_means(loaded, h, words) for h in hps]
    s_dm, _ = dosed_direction(loaded, hps, dirs, words, probe, finding.rule)
    if s_dm is not None:
        picks["diffmean"] = Steering(tuple(DirectionSteer(h, v, s_dm / len(hps) ** 0.5)
                                           for h, v in zip(hps, dirs, strict=True)))
    return {"finder_s": finder_s, "trained_s": trained_s, "name": best.name,
            "strength": s, "steerings": picks,
            "trained_probe": [trained.before.concept_prob, trained.after.concept_prob,
                              trained.after.kl]}


def _describe(steering: Steering) -> list:
    return [{"hookpoint": f.hookpoint, "feature": getattr(f, "feature", None),
             "kind": type(f).__name__, "mode": f.mode, "strength": round(f.strength, 4),
             "positions": steering.positions} for f in steering.features]


def generate_half(loaded, half: str, tokens: int, limit: int | None) -> None:
    data = load_half(half)
    concepts = dict(list(data.concepts.items())[:limit] if limit else data.concepts.items())
    probe, rng, decode = make_probe(loaded.lm), random.Random(0), loaded.lm.tokenizer.decode
    gen = GenConfig(max_new_tokens=tokens)
    picks = {}
    for c, words in concepts.items():
        picks[c] = _picks(loaded, c, words, probe, rng)
        print(f"{c}: {picks[c]['name']} ({picks[c]['finder_s']:.1f} s finder, "
              f"{picks[c].get('trained_s', 0):.1f} s trained)", flush=True)
    pairs = []
    for prompt in data.prompts:
        t0 = time.perf_counter()
        ids = prompt_ids(loaded.lm, prompt, gen)
        rows = [(c, m) for c in concepts for m in BATCHED
                if picks[c].get("steerings", {}).get(m) is not None]
        steerings = [picks[c]["steerings"][m] for c, m in rows]
        hps = sorted({f.hookpoint for r in steerings for f in r.features})
        norms, _ = typical_norms(loaded.lm, loaded.saes, hps, corpus=loaded.corpus)
        outs = generate(loaded.lm, loaded.saes, norms, ids, [None, *steerings], gen,
                        outlier_factor=loaded.outlier_factor)
        unsteered = decode(outs[0], skip_special_tokens=True)
        got = {key: decode(o, skip_special_tokens=True) for key, o in zip(rows, outs[1:],
                                                                         strict=True)}
        for c in concepts:
            asked = prompt_ids(loaded.lm, prompted(prompt, c), gen)
            st = picks[c].get("steerings", {})
            both = generate(loaded.lm, loaded.saes, norms | _norms_of(loaded, st), asked,
                            [None, *([st["prompt_steer"]] if st else [])], gen,
                            outlier_factor=loaded.outlier_factor)
            got[(c, "prompt")] = decode(both[0], skip_special_tokens=True)
            if st:
                got[(c, "prompt_steer")] = decode(both[1], skip_special_tokens=True)
                kl = generate_kl_controlled(loaded.lm, loaded.saes, _norms_of(loaded, st), ids,
                                            st["kl_dose"], gen, max_kl=1.5,
                                            outlier_factor=loaded.outlier_factor)
                got[(c, "kl_dose")] = decode(list(kl.tokens), skip_special_tokens=True)
            pairs.append({"concept": c, "prompt": prompt, "unsteered": unsteered,
                          "texts": {m: got.get((c, m)) for m in METHODS}})
        print(f"prompt {prompt!r}: {time.perf_counter() - t0:.0f} s", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    texts_file(half).write_text(json.dumps({
        "half": half, "tokens": tokens, "pairs": pairs,
        "picks": {c: {k: v for k, v in p.items() if k != "steerings"}
                  | {"steerings": {m: _describe(s) for m, s in p.get("steerings", {}).items()}}
                  for c, p in picks.items()}}, indent=1))
    print(f"wrote {texts_file(half)}")


def _norms_of(loaded, steerings: dict) -> dict:
    hps = sorted({f.hookpoint for s in steerings.values() for f in s.features})
    return typical_norms(loaded.lm, loaded.saes, hps, corpus=loaded.corpus)[0] if hps else {}


# --- judging --------------------------------------------------------------------------


def all_concepts() -> dict:
    return {**load_half("dev").concepts, **load_half("test").concepts}


def signals_of(judge: Judge, half: str, items: list[dict]) -> list[Signals]:
    """Signals of items {concept, prompt, text, reference}; the other prompts are the rest
    of the item's half."""
    prompts = load_half(half).prompts
    return [judge.signals(it["text"], concept=it["concept"], prompt=it["prompt"],
                          other_prompts=[p for p in prompts if p != it["prompt"]],
                          reference=it["reference"]) for it in items]


def labelled(half: str) -> list[dict]:
    return [x for x in json.loads(LABELS.read_text())["items"] if x["half"] == half]


def _agreement(judged: list, hand: list[dict]) -> dict:
    """Exact agreement per score, and the Pearson correlation of the harmonic means."""
    out = {d: statistics.mean(getattr(j, d) == h[d] for j, h in zip(judged, hand, strict=True))
           for d in ("concept", "instruction", "fluency")}
    a = [j.score for j in judged]
    b = [_hand_score(h) for h in hand]
    out["r"] = statistics.correlation(a, b) if len(set(a)) > 1 else 0.0
    return out


def _hand_score(h: dict) -> float:
    from sae_core.steer.judge import harmonic

    return harmonic(h["concept"], h["instruction"], h["fluency"])


def fit_cuts(sigs: list[Signals], hand: list[dict]) -> Cuts:
    """The cut points that agree most with the hand scores, one score at a time."""
    grid = [x / 20 for x in range(-10, 41)]

    def best(dim: str, make) -> object:
        options = [make(a, b) for a in grid for b in grid]
        return max(options, key=lambda c: sum(getattr(grade(s, c), dim) == h[dim]
                                              for s, h in zip(sigs, hand, strict=True)))

    ranks = [x / 20 for x in range(21)]
    c = best("concept", lambda a, b: Cuts(concept_rank=(a, b)) if 0 <= a <= b <= 1
             and a in ranks and b in ranks else CUTS)
    i = best("instruction", lambda a, b: Cuts(instruction=(a, b)) if a <= b else CUTS)
    f = max((Cuts(fluency_nll=(a, b), loop=lp) for a in grid for b in grid if b <= a
             for lp in (0.15, 0.2, 0.25, 0.3, 0.4, 0.5)),
            key=lambda c: sum(grade(s, c).fluency == h["fluency"]
                              for s, h in zip(sigs, hand, strict=True)))
    return Cuts(c.concept_rank, i.instruction, f.fluency_nll, f.loop)


def bootstrap(per_concept: dict[str, dict[str, float]], a: str, b: str | None,
              rng: random.Random) -> tuple[float, float]:
    """95% interval of mean(a) - mean(b) (or of mean(a)) over concepts resampled."""
    names = list(per_concept)
    stats = []
    for _ in range(BOOTSTRAP):
        draw = [rng.choice(names) for _ in names]
        va = statistics.mean(per_concept[c][a] for c in draw)
        vb = statistics.mean(per_concept[c][b] for c in draw) if b else 0.0
        stats.append(va - vb)
    stats.sort()
    return stats[int(0.025 * BOOTSTRAP)], stats[int(0.975 * BOOTSTRAP) - 1]


def score(cuts: Cuts) -> None:
    data = json.loads(texts_file("test").read_text())
    judge = Judge(load_judge(), all_concepts(), cuts)
    t0 = time.perf_counter()
    per_pair = []
    for p in data["pairs"]:
        row = {"concept": p["concept"], "prompt": p["prompt"]}
        for m in METHODS:
            text = p["texts"][m]
            if text is None:  # the method found nothing to steer with: the unsteered text
                text = p["unsteered"]
            sig = signals_of(judge, "test", [{"concept": p["concept"], "prompt": p["prompt"],
                                              "text": text, "reference": p["unsteered"]}])[0]
            j = grade(sig, cuts)
            row[m] = {"score": j.score, "concept": j.concept, "instruction": j.instruction,
                      "fluency": j.fluency, "keyword": keyword_grade(sig.mentions).score}
        per_pair.append(row)
    print(f"judged {len(per_pair) * len(METHODS)} texts in {time.perf_counter() - t0:.0f} s")
    concepts = sorted({r["concept"] for r in per_pair})
    per_concept = {c: {m: statistics.mean(r[m]["score"] for r in per_pair if r["concept"] == c)
                       for m in METHODS} for c in concepts}
    means = {m: statistics.mean(per_concept[c][m] for c in concepts) for m in METHODS}
    rng = random.Random(0)
    steered = [m for m in METHODS if m != "prompt"]
    best = max(steered, key=means.get)
    lo, hi = bootstrap(per_concept, best, "prompt", rng)
    print("| method | score | 95% interval | concept | instruction | fluency |")
    print("|---|---|---|---|---|---|")
    for m in sorted(METHODS, key=lambda m: -means[m]):
        ci = bootstrap(per_concept, m, None, rng)
        parts = [statistics.mean(r[m][d] for r in per_pair)
                 for d in ("concept", "instruction", "fluency")]
        print(f"| {m} | {means[m]:.3f} | {ci[0]:.3f}-{ci[1]:.3f} | "
              + " | ".join(f"{x:.2f}" for x in parts) + " |")
    print("\n| concept | " + " | ".join(METHODS) + " |\n|---|" + "---|" * len(METHODS))
    for c in concepts:
        print(f"| {c} | " + " | ".join(f"{per_concept[c][m]:.2f}" for m in METHODS) + " |")
    hand = labelled("test")
    sigs = signals_of(judge, "test", hand)
    agree = _agreement([grade(s, cuts) for s in sigs], hand)
    kw = _agreement([keyword_grade(s.mentions) for s in sigs], hand)
    print(f"agreement with {len(hand)} hand-scored test-half texts: judge {agree}, "
          f"keyword rule {kw}")
    finder_s = [p["finder_s"] for p in data["picks"].values()]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "steering_judge.json").write_text(json.dumps({
        "means": means, "per_concept": per_concept, "pairs": per_pair,
        "agreement": agree, "keyword_agreement": kw}, indent=1))
    print(f"RESULT score_prompt={means['prompt']:.3f} score_best={means[best]:.3f} "
          f"best_method={best} score_finder={means['finder']:.3f} "
          f"score_diffmean={means['diffmean']:.3f} score_random={means['random']:.3f} "
          f"ci_best_minus_prompt={lo:.3f}:{hi:.3f} judge_agreement={agree['r']:.3f} "
          f"keyword_agreement={kw['r']:.3f} finder_s={statistics.median(finder_s):.1f}")


def fit() -> Cuts:
    hand = labelled("dev")
    judge = Judge(load_judge(), all_concepts())
    sigs = signals_of(judge, "dev", hand)
    cuts = fit_cuts(sigs, hand)
    print(f"{len(hand)} dev-half hand-scored texts; fitted {cuts}")
    print(f"dev agreement: judge {_agreement([grade(s, cuts) for s in sigs], hand)}; "
          f"keyword {_agreement([keyword_grade(s.mentions) for s in sigs], hand)}")
    return cuts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("generate", "fit", "score"))
    parser.add_argument("--half", choices=("dev", "test"), default="test")
    parser.add_argument("--atlas", default=str(DEFAULT_ATLAS))
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--limit", type=int, help="only the first N concepts")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.stage == "generate":
        from ui import session

        generate_half(session.open_atlas(args.atlas), args.half, args.tokens, args.limit)
    elif args.stage == "fit":
        fit()
    else:
        score(CUTS)


if __name__ == "__main__":
    main()
