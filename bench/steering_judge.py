"""Steering methods judged as AxBench judges them, tuned on one half of the concepts and
scored on the other (issue 27).

Stages (each writes bench/out/ files the next reads):
  generate --half dev|test   every method's text for every concept x prompt of the half
  fit                         the judge's cut points from the development half's hand labels
  score                       the judge on the test half: the RESULT line

Methods (sae_core/steer/methods.py: the finder's pick, clamped, answer only, prompt +
steering, a KL-controlled dose, a trained direction, the difference of means, prompting, a
random feature), on the same (concept, prompt) pairs, greedy, 48 new tokens.
The score of a text is the harmonic mean of the judge's concept, instruction and fluency
scores (0-2); a method's score is its mean over pairs, with a bootstrap interval over
concepts (pairs resampled by concept).

    flock /tmp/bench.lock .venv/bin/python bench/steering_judge.py generate --half test
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from sae_core.atlas.layout import DEFAULT_ATLAS
from sae_core.steer.concept_split import load_half
from sae_core.steer.edits import Steering
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
from sae_core.steer.judge_calibration import agreement, bootstrap_interval, fit_cuts
from sae_core.steer.methods import (
    METHODS,
    ON_PLAIN_PROMPT,
    MethodSteerings,
    method_steerings,
    norms_for,
    write_kl_dose,
    write_prompted,
)

OUT = Path("bench/out")
LABELS = Path("assets/steering_judge_labels.json")


def texts_file(half: str) -> Path:
    return OUT / f"steering_texts_{half}.json"


# --- generate -------------------------------------------------------------------------


def _picks(loaded, concept: str, words, probe, rng) -> dict:
    """The finder's pick and every method's steering for one concept, with timings."""
    t = time.perf_counter()
    finding = find_steering(loaded, concept, words, probe=probe)
    finder_s = time.perf_counter() - t
    if finding.best is None:
        return {"finder_s": finder_s, "name": None}
    methods = method_steerings(loaded, finding, probe, rng)
    return {"finder_s": finder_s, "trained_s": methods.trained_s, "name": finding.best.name,
            "strength": finding.best.strength, "methods": methods}


def _describe(steering: Steering) -> list:
    return [{"hookpoint": f.hookpoint, "feature": getattr(f, "feature", None), "kind":
             type(f).__name__, "mode": f.mode, "strength": round(f.strength, 4)} for f in
            steering.features]


def generate_half(loaded, half: str, tokens: int, limit: int | None) -> None:
    """Every method's text for every (concept, prompt) of the half; the plain-prompt
    methods of all concepts in one batch per prompt."""
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
        rows = [(c, m) for c in concepts if "methods" in picks[c] for m in ON_PLAIN_PROMPT
                if m in picks[c]["methods"].steerings]
        steerings = [picks[c]["methods"].steerings[m] for c, m in rows]
        outs = generate(loaded.lm, loaded.saes, norms_for(loaded, steerings), ids,
                        [None, *steerings], gen, outlier_factor=loaded.outlier_factor)
        unsteered = decode(outs[0], skip_special_tokens=True)
        got = {key: decode(o, skip_special_tokens=True) for key, o in zip(rows, outs[1:],
                                                                         strict=True)}
        for c in concepts:
            methods = picks[c].get("methods") or MethodSteerings({}, 1.5)
            got |= {(c, m): t for m, t in write_prompted(loaded, prompt, c, methods,
                                                          gen).items()}
            if "kl_dose" in methods.steerings:
                got[(c, "kl_dose")] = write_kl_dose(loaded, prompt, methods, gen)
            pairs.append({"concept": c, "prompt": prompt, "unsteered": unsteered,
                          "texts": {m: got.get((c, m)) for m in METHODS}})
        print(f"prompt {prompt!r}: {time.perf_counter() - t0:.0f} s", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    texts_file(half).write_text(json.dumps({
        "half": half, "tokens": tokens, "pairs": pairs,
        "picks": {c: {k: v for k, v in p.items() if k != "methods"} | {"steerings": {
            m: _describe(s) for m, s in p["methods"].steerings.items()}}
            for c, p in picks.items() if "methods" in p}}, indent=1))
    print(f"wrote {texts_file(half)}")


# --- judging --------------------------------------------------------------------------


def all_concepts() -> dict:
    return {**load_half("dev").concepts, **load_half("test").concepts}


def signals_of(judge: Judge, half: str, items: list[dict]) -> list[Signals]:
    """Signals of items {concept, prompt, text, reference}; the instruction's contrast is
    the next prompt of the item's half (one, not all: the judge's 262k-token unembedding
    over each text is most of its cost)."""
    prompts = load_half(half).prompts
    return [judge.signals(it["text"], concept=it["concept"], prompt=it["prompt"],
                          other_prompts=[prompts[(prompts.index(it["prompt"]) + 1)
                                                 % len(prompts)]],
                          reference=it["reference"]) for it in items]


def cached_signals(half: str, items: list[dict], judge: Judge | None) -> list[Signals]:
    """Signals of the items, read from bench/out/signals_HALF.json where judged before (the
    judge is slow; cut points change without judging again)."""
    path = OUT / f"signals_{half}.json"
    cache = json.loads(path.read_text()) if path.exists() else {}
    keys = [json.dumps([it["concept"], it["prompt"], it["text"], it["reference"]])
            for it in items]
    todo = [(k, it) for k, it in zip(keys, items, strict=True) if k not in cache]
    if todo:
        judge = judge or Judge(load_judge(), all_concepts())
        for n, (k, it) in enumerate(todo):
            cache[k] = dataclasses.asdict(signals_of(judge, half, [it])[0])
            if n % 50 == 49:
                path.write_text(json.dumps(cache))
                print(f"judged {n + 1} of {len(todo)} texts", flush=True)
        path.write_text(json.dumps(cache))
    return [Signals(**cache[k]) for k in keys]


def score(cuts: Cuts, half: str = "test") -> None:
    """The methods' scores on a half (the development half's only to choose by)."""
    data = json.loads(texts_file(half).read_text())
    t0 = time.perf_counter()
    items = [{"concept": p["concept"], "prompt": p["prompt"], "reference": p["unsteered"],
              # a method that found nothing to steer with leaves the unsteered text
              "text": p["unsteered"] if p["texts"][m] is None else p["texts"][m]}
             for p in data["pairs"] for m in METHODS]
    sigs = iter(cached_signals(half, items, None))
    per_pair = []
    for p in data["pairs"]:
        row = {"concept": p["concept"], "prompt": p["prompt"]}
        for m in METHODS:
            sig = next(sigs)
            j = grade(sig, cuts)
            row[m] = {"score": j.score, "concept": j.concept, "instruction": j.instruction,
                      "fluency": j.fluency, "keyword": keyword_grade(sig.mentions).score}
        per_pair.append(row)
    print(f"judged {len(per_pair) * len(METHODS)} texts in {time.perf_counter() - t0:.0f} s")
    concepts = sorted({r["concept"] for r in per_pair})
    per_concept = {c: {m: statistics.mean(r[m]["score"] for r in per_pair if r["concept"] == c)
                       for m in METHODS} for c in concepts}
    means = {m: statistics.mean(per_concept[c][m] for c in concepts) for m in METHODS}
    steered = [m for m in METHODS if m != "prompt"]
    best = max(steered, key=means.get)
    lo, hi = bootstrap_interval(per_concept, best, "prompt")
    print("| method | score | 95% interval | concept | instruction | fluency |")
    print("|---|---|---|---|---|---|")
    for m in sorted(METHODS, key=lambda m: -means[m]):
        ci = bootstrap_interval(per_concept, m)
        parts = [statistics.mean(r[m][d] for r in per_pair)
                 for d in ("concept", "instruction", "fluency")]
        print(f"| {m} | {means[m]:.3f} | {ci[0]:.3f}-{ci[1]:.3f} | "
              + " | ".join(f"{x:.2f}" for x in parts) + " |")
    print("\n| concept | " + " | ".join(METHODS) + " |\n|---|" + "---|" * len(METHODS))
    for c in concepts:
        print(f"| {c} | " + " | ".join(f"{per_concept[c][m]:.2f}" for m in METHODS) + " |")
    hand = [x for x in json.loads(LABELS.read_text())["items"] if x["half"] == half]
    sigs = cached_signals(half, hand, None)
    agree = agreement([grade(s, cuts) for s in sigs], [h["hand"] for h in hand])
    kw = agreement([keyword_grade(s.mentions) for s in sigs], [h["hand"] for h in hand])
    print(f"agreement with {len(hand)} hand-scored {half}-half texts: judge {agree}, "
          f"keyword rule {kw}")
    finder_s = [p["finder_s"] for p in data["picks"].values()]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"steering_judge_{half}.json").write_text(json.dumps({
        "means": means, "per_concept": per_concept, "pairs": per_pair,
        "agreement": agree, "keyword_agreement": kw}, indent=1))
    print(f"RESULT score_prompt={means['prompt']:.3f} score_best={means[best]:.3f} "
          f"best_method={best} score_finder={means['finder']:.3f} "
          f"score_diffmean={means['diffmean']:.3f} score_random={means['random']:.3f} "
          f"ci_best_minus_prompt={lo:.3f}:{hi:.3f} judge_agreement={agree['r']:.3f} "
          f"keyword_agreement={kw['r']:.3f} finder_s={statistics.median(finder_s):.1f}")


def fit() -> Cuts:
    hand = [x for x in json.loads(LABELS.read_text())["items"] if x["half"] == "dev"]
    sigs = cached_signals("dev", hand, None)
    scores = [h["hand"] for h in hand]
    cuts = fit_cuts(sigs, scores)
    print(f"{len(hand)} dev-half hand-scored texts; fitted {cuts}")
    print(f"dev agreement: judge {agreement([grade(s, cuts) for s in sigs], scores)}; "
          f"keyword {agreement([keyword_grade(s.mentions) for s in sigs], scores)}")
    return cuts


def sample(half: str, n: int) -> None:
    """n texts of the half for hand labels, every method and the unsteered text drawn alike,
    shuffled; the method is kept apart from what the labeller reads."""
    data, rng = json.loads(texts_file(half).read_text()), random.Random(1)
    pool = [{"concept": p["concept"], "prompt": p["prompt"], "text": p["texts"][m] if m
             != "unsteered" else p["unsteered"], "reference": p["unsteered"], "method": m}
            for p in data["pairs"] for m in (*METHODS, "unsteered")
            if m == "unsteered" or p["texts"][m] is not None]
    unique = list({(x["prompt"], x["concept"], x["text"]): x for x in pool}.values())
    rng.shuffle(unique)
    chosen = unique[:n]
    for i, x in enumerate(chosen):
        x["id"], x["half"] = f"{half}-{i:03d}", half
    blind = [{k: x[k] for k in ("id", "concept", "prompt", "text")} for x in chosen]
    (OUT / f"to_label_{half}.json").write_text(json.dumps(blind, indent=1))
    (OUT / f"methods_{half}.json").write_text(json.dumps(chosen, indent=1))
    print(f"wrote {len(chosen)} items to {OUT / f'to_label_{half}.json'}")


def merge_labels(half: str) -> None:
    """Add the hand scores written for the blind items (bench/out/labels_HALF.json, id ->
    scores) to the committed labels, with the method put back."""
    hand = json.loads((OUT / f"labels_{half}.json").read_text())
    items = json.loads((OUT / f"methods_{half}.json").read_text())
    data = json.loads(LABELS.read_text()) if LABELS.exists() else {
        "about": "Steered, unsteered and prompted texts scored by hand under the rules of "
                 "docs/steering_judge.md, blind to the method (bench/steering_judge.py "
                 "sample). The development half's labels fit the judge's cut points; only "
                 "the test half's are used to report its agreement.", "items": []}
    kept = [x for x in data["items"] if x["half"] != half]
    for x in items:
        h = hand[x["id"]]
        kept.append(x | {"hand": {d: int(h[d]) for d in ("concept", "instruction",
                                                          "fluency")},
                         "note": h.get("note", "")})
    data["items"] = kept
    LABELS.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    print(f"{LABELS}: {sum(x['half'] == half for x in kept)} {half} labels")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("generate", "sample", "merge", "fit", "score"))
    parser.add_argument("--n", type=int, default=90, help="sample: texts to label")
    parser.add_argument("--half", choices=("dev", "test"), default="test")
    parser.add_argument("--atlas", default=str(DEFAULT_ATLAS))
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--limit", type=int, help="only the first N concepts")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.stage == "generate":
        from ui.serving import session

        generate_half(session.open_atlas(args.atlas), args.half, args.tokens, args.limit)
    elif args.stage == "sample":
        sample(args.half, args.n)
    elif args.stage == "merge":
        merge_labels(args.half)
    elif args.stage == "fit":
        fit()
    else:
        score(CUTS, args.half)


if __name__ == "__main__":
    main()
