"""Steering towards everyday concepts that no preset uses: five methods side by side.

For each concept (with its concept words, listed below) and each neutral prompt, greedy, the
same number of new tokens:
- old: today's concept search (explore/concepts.py, the tab's default layers n/5..last), its
  best feature at the documented strength 0.4;
- new: the output-side finder (steer/finder.py), its recommendation at its dose;
- diffmean: the difference-of-means direction (steer/baselines.py) at the new pick's layer,
  dosed by the same rule on the same probe and chosen by the same text check;
- prompt: no steering, the concept asked for in the prompt;
- random: a random feature of the new pick's layer(s) at the same strength(s).
A pair (concept, prompt) is a hit when the steered text names the concept (whole-word, any
concept word) and the unsteered text does not. Fluency: the perplexity of the steered text
under the unsteered model (after the original prompt), divided by that of the unsteered text;
median over pairs. Loops lower perplexity, so the mean share of repeated 3-grams is reported
too (the unsteered texts' share is printed for reference). Ends with one RESULT line.

    flock /tmp/bench.lock .venv/bin/python bench/steering_concepts.py [--atlas FOLDER]
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

from sae_core.atlas.layout import DEFAULT_ATLAS
from sae_core.explore.concepts import find_concept_features
from sae_core.norms import typical_norms
from sae_core.steer.baselines import diff_of_means, dosed_direction, prompted
from sae_core.steer.concept_tokens import count_mentions
from sae_core.steer.edits import DirectionSteer, FeatureSteer, Steering
from sae_core.steer.effect import make_probe
from sae_core.steer.finder import find_steering
from sae_core.steer.fluency import perplexity, repeated_share
from sae_core.steer.generation import GenConfig, generate, prompt_ids
from sae_core.steer.presets import load_concepts
from ui.serving import session

CONCEPTS = {
    "dog": ["dog", "dogs", "puppy", "puppies", "bark", "barking", "leash"],
    "coffee": ["coffee", "espresso", "latte", "caffeine", "cafe", "mug"],
    "rain": ["rain", "rainy", "raining", "umbrella", "storm", "drizzle"],
    "football": ["football", "soccer", "goal", "goals", "stadium", "referee"],
    "pizza": ["pizza", "pizzas", "pepperoni", "mozzarella", "slice", "crust"],
    "winter": ["winter", "snow", "snowy", "frost", "frozen", "icy"],
    "books": ["book", "books", "novel", "novels", "library", "reading"],
    "cars": ["car", "cars", "driving", "engine", "highway", "driver"],
    "garden": ["garden", "gardens", "flowers", "plants", "gardening", "roses"],
    "doctor": ["doctor", "doctors", "hospital", "medicine", "nurse", "patients"],
    "birds": ["bird", "birds", "wings", "feathers", "nest", "flock"],
    "chocolate": ["chocolate", "cocoa", "candy", "dessert", "truffle", "fudge"],
    "mountains": ["mountain", "mountains", "hiking", "peak", "summit", "climbing"],
    "computers": ["computer", "computers", "software", "laptop", "keyboard", "programming"],
    "school": ["school", "teacher", "students", "classroom", "homework", "lesson"],
    "fire": ["fire", "flames", "burning", "smoke", "blaze", "fireplace"],
    "trains": ["train", "trains", "railway", "locomotive", "rails", "platform"],
    "cooking": ["cooking", "recipe", "recipes", "kitchen", "chef", "baking"],
    "horses": ["horse", "horses", "riding", "saddle", "stable", "pony"],
    "wine": ["wine", "wines", "vineyard", "grapes", "bottle", "sommelier"],
    "castle": ["castle", "castles", "king", "queen", "kingdom", "throne"],
    "robots": ["robot", "robots", "android", "machine", "machines", "automation"],
}
PROMPTS = ("Write a short story.", "Tell me about your weekend.", "Describe your ideal house.",
           "Give me three tips for a job interview.")
METHODS = ("old", "new", "diffmean", "prompt", "random")
STEERED = ("old", "new", "diffmean", "random")
OLD_STRENGTH = 0.4


def check_no_preset_overlap() -> None:
    used = {w.lower() for c in load_concepts() for w in (c.concept, *c.concept_words)}
    if clash := sorted(c for c in CONCEPTS if c.lower() in used):
        raise SystemExit(f"concepts used by presets: {clash}")


def old_steering(loaded, concept: str) -> Steering | None:
    n = 1 + max(int(h.split(".")[1]) for h in loaded.saes)
    hits = find_concept_features(loaded, concept, top=1, layers=(n // 5, n - 1))
    return Steering((FeatureSteer(hits[0].hookpoint, hits[0].feature, OLD_STRENGTH),)) \
        if hits else None


def diffmean_steering(loaded, finding, words, probe) -> Steering | None:
    """The difference of means at the new pick's (first) layer, dosed and checked as the
    finder doses and checks its features."""
    h = finding.best.parts[0].hookpoint
    v = diff_of_means(loaded, h, words)
    s, _ = dosed_direction(loaded, h, v, words, probe, finding.rule)
    return None if s is None else Steering((DirectionSteer(h, v, s),))


def random_steering(loaded, steering: Steering, rng: random.Random) -> Steering:
    return Steering(tuple(FeatureSteer(f.hookpoint, rng.randrange(
        loaded.saes[f.hookpoint].cfg.d_sae), f.strength) for f in steering.features))


def find_picks(loaded, concepts: dict, probe, rng) -> tuple[dict, list[float]]:
    """Per concept, the steering of each method (None: the method found nothing)."""
    picks, finder_s = {}, []
    for c, words in concepts.items():
        t = time.perf_counter()
        finding = find_steering(loaded, c, words, probe=probe)
        finder_s.append(time.perf_counter() - t)
        best = finding.best
        new = best.steering() if best else None
        picks[c] = {"old": old_steering(loaded, c), "new": new,
                    "diffmean": diffmean_steering(loaded, finding, words, probe) if best
                    else None,
                    "random": random_steering(loaded, new, rng) if new else None}
        print(f"{c}: new {best.name + f' at {best.strength:g}' if best else 'none'} "
              f"({finder_s[-1]:.1f} s)", flush=True)
    return picks, finder_s


def _scored(lm, ids, new_ids, plain_ppl) -> tuple[str, float, float]:
    return (lm.tokenizer.decode(new_ids, skip_special_tokens=True),
            perplexity(lm, ids, new_ids) / plain_ppl, repeated_share(new_ids))


def write_prompt(loaded, prompt: str, concepts: dict, picks: dict, gen) -> tuple[list, float]:
    """(one row per concept with every method's text, ppl ratio and repetition; the
    unsteered text's repetition) for one prompt: all steered rows in one batch."""
    lm = loaded.lm
    ids = prompt_ids(lm, prompt, gen)
    live = [picks[c][m] for c in concepts for m in STEERED if picks[c][m] is not None]
    hookpoints = sorted({f.hookpoint for r in live for f in r.features})
    norms, _ = typical_norms(lm, loaded.saes, hookpoints, corpus=loaded.corpus)
    outs = generate(lm, loaded.saes, norms, ids, [None, *live], gen,
                    outlier_factor=loaded.outlier_factor)
    plain, texts = outs[0], iter(outs[1:])
    plain_text, plain_ppl = lm.tokenizer.decode(plain, skip_special_tokens=True), \
        perplexity(lm, ids, plain)
    rows = []
    for c, words in concepts.items():
        row = {"concept": c, "prompt": prompt, "unsteered": plain_text}
        for m in STEERED:
            row[m] = None if picks[c][m] is None else _scored(lm, ids, next(texts), plain_ppl)
        asked = prompt_ids(lm, prompted(prompt, c), gen)
        row["prompt_text"] = _scored(lm, ids, generate(lm, {}, {}, asked, [None], gen)[0],
                                     plain_ppl)
        plain_hit = count_mentions(plain_text, words) > 0
        for m in METHODS:
            got = row["prompt_text" if m == "prompt" else m]
            row[f"hit_{m}"] = bool(got and count_mentions(got[0], words) > 0 and not plain_hit)
            row[f"ppl_{m}"], row[f"rep_{m}"] = (got[1], got[2]) if got else (None, None)
        rows.append(row)
    return rows, repeated_share(plain)


def summarise(pairs: list[dict]) -> dict:
    summary = {}
    for m in METHODS:
        ratios = [p[f"ppl_{m}"] for p in pairs if p[f"ppl_{m}"] is not None
                  and p[f"ppl_{m}"] == p[f"ppl_{m}"]]
        reps = [p[f"rep_{m}"] for p in pairs if p[f"rep_{m}"] is not None]
        summary[f"hit_rate_{m}"] = sum(p[f"hit_{m}"] for p in pairs) / len(pairs)
        summary[f"ppl_ratio_{m}"] = statistics.median(ratios) if ratios else float("nan")
        summary[f"repeated_{m}"] = statistics.mean(reps) if reps else float("nan")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atlas", default=str(DEFAULT_ATLAS))
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--concepts", nargs="*", help="a subset of the concepts")
    parser.add_argument("--out", type=Path, default=Path("bench/out/steering_concepts.json"))
    args = parser.parse_args()
    check_no_preset_overlap()
    loaded, t0 = session.open_atlas(args.atlas), time.perf_counter()
    concepts = {c: w for c, w in CONCEPTS.items() if not args.concepts or c in args.concepts}
    picks, finder_s = find_picks(loaded, concepts, make_probe(loaded.lm), random.Random(0))
    pairs, plain_rep = [], []
    for prompt in PROMPTS:
        rows, rep = write_prompt(loaded, prompt, concepts, picks,
                                 GenConfig(max_new_tokens=args.tokens))
        pairs += rows
        plain_rep.append(rep)
        print(f"prompt {prompt!r} done at {time.perf_counter() - t0:.0f} s", flush=True)
    summary = summarise(pairs)
    print("| concept | " + " | ".join(METHODS) + " |\n|---|" + "---|" * len(METHODS))
    for c in concepts:
        mine = [p for p in pairs if p["concept"] == c]
        cells = [f"{sum(p[f'hit_{m}'] for p in mine)}/{len(mine)}" for m in METHODS]
        print(f"| {c} | " + " | ".join(cells) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "summary": summary, "finder_seconds": finder_s, "prompts": PROMPTS,
        "picks": {c: {m: describe(s) for m, s in p.items()} for c, p in picks.items()},
        "pairs": pairs}, indent=1))
    print(f"unsteered texts: mean share of repeated 3-grams {statistics.mean(plain_rep):.3f}")
    print(f"finder: median {statistics.median(finder_s):.1f} s per concept; "
          f"total {time.perf_counter() - t0:.0f} s; wrote {args.out}")
    print("RESULT " + " ".join(f"{k}={summary[k]:.3f}" for k in (
        "hit_rate_new", "hit_rate_old", "hit_rate_diffmean", "hit_rate_prompt",
        "hit_rate_random", "ppl_ratio_new", "ppl_ratio_diffmean", "ppl_ratio_old",
        "ppl_ratio_prompt", "ppl_ratio_random", "repeated_new", "repeated_diffmean",
        "repeated_old", "repeated_prompt", "repeated_random")))


def describe(steering: Steering | None) -> list | None:
    if steering is None:
        return None
    return [{"layer": f.layer, "feature": getattr(f, "feature", None),
             "kind": type(f).__name__, "strength": f.strength} for f in steering.features]


if __name__ == "__main__":
    main()
