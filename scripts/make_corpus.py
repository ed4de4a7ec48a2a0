"""Build assets/corpus.jsonl: the default corpus, reproducibly.

Two sources, three genres:
- `docstring`: docstrings of the Python standard library (human-written technical English).
- `story` and `explanation`: text the embedded SmolLM2-135M-Instruct writes from prompts made
  below by crossing fixed lists (seeded sampling, so a rerun on the same versions matches).

Run: `python scripts/make_corpus.py` (about 15 minutes on 2 cores). The output is committed
because docstrings change between Python versions and generation is slow.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
import random
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sae_core.lm import load_lm

CHARACTERS = [
    "a shy girl named Mia", "an old fisherman", "a curious robot", "a lost puppy",
    "two brothers", "a young baker in Paris", "a retired teacher", "a clever fox",
    "a nurse on a night shift", "a boy who could not swim", "a grandmother in Kyoto",
    "a street musician", "a farmer named Jonas", "an astronaut on Mars", "a talking cat",
    "a girl who loved maps", "a knight afraid of the dark", "a new student from Brazil",
]
EVENTS = [
    "finds a mysterious letter", "gets lost in a storm", "makes an unexpected friend",
    "has to win a race", "discovers a hidden garden", "loses something precious",
    "learns to be brave", "plans a surprise party", "meets a famous scientist",
    "tries to fix a broken clock",
]
PLACES = [
    "a small village", "London", "the desert", "a busy market", "the ocean", "a mountain",
    "a big city hospital", "an old library", "a farm", "New York",
]
TOPICS = [
    "how rain forms", "why the sky is blue", "how vaccines work", "what inflation is",
    "how bees make honey", "how a bicycle stays upright", "why we sleep", "how volcanoes erupt",
    "what photosynthesis is", "how the heart pumps blood", "how airplanes fly",
    "why leaves change color", "how money is printed", "what gravity is",
    "how the internet works", "why the ocean is salty", "how earthquakes happen",
    "what DNA is", "how a car engine works", "why the moon has phases", "how to cook rice",
    "the history of the Roman Empire", "how elections work", "what a black hole is",
    "how memory works in the brain", "the causes of the First World War",
    "how plants grow from seeds", "how a refrigerator keeps food cold",
    "what anger does to the body", "how to make friends at a new school",
]
AUDIENCES = ["a curious child", "a high school student", "an adult beginner", "a tourist"]


def story_prompts(rng: random.Random, n: int) -> list[str]:
    combos = list(itertools.product(CHARACTERS, EVENTS, PLACES))
    rng.shuffle(combos)
    return [f"Write a short story about {c} who {e} in {p}." for c, e, p in combos[:n]]


def explanation_prompts(rng: random.Random, n: int) -> list[str]:
    combos = list(itertools.product(TOPICS, AUDIENCES))
    rng.shuffle(combos)
    return [f"Explain {t} to {a}, in a few paragraphs." for t, a in combos[:n]]


def stdlib_docstrings() -> list[str]:
    """Deduplicated docstrings of importable stdlib modules, their classes and functions."""
    seen: set[str] = set()
    docs: list[str] = []
    skip = ("test", "idlelib", "tkinter", "turtle", "antigravity", "this", "__")
    names = sorted(sys.stdlib_module_names)
    for name in names:
        if name.startswith(skip):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                module = __import__(name)
            except Exception:
                continue
        members = [obj for _, obj in inspect.getmembers(module)
                   if inspect.isclass(obj) or inspect.isfunction(obj)]
        methods = [m for cls in members if inspect.isclass(cls)
                   for _, m in inspect.getmembers(cls, inspect.isfunction)]
        for obj in [module, *members, *methods]:
            doc = inspect.getdoc(obj)
            if doc and len(doc) > 120 and doc not in seen:
                seen.add(doc)
                docs.append(doc)
    return docs


@torch.inference_mode()
def generate(lm, prompts: list[str], *, batch: int, max_new: int, seed: int) -> list[str]:
    tok = lm.tokenizer
    tok.padding_side = "left"
    out: list[str] = []
    for start in range(0, len(prompts), batch):
        t0 = time.time()
        chunk = [lm.chat_prompt(p) for p in prompts[start:start + batch]]
        enc = tok(chunk, return_tensors="pt", padding=True)
        torch.manual_seed(seed + start)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ids = lm.model.generate(
                **enc, max_new_tokens=max_new, do_sample=True, temperature=0.8, top_k=50,
                repetition_penalty=1.15, pad_token_id=tok.pad_token_id,
            )
        texts = tok.batch_decode(ids[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
        out.extend(t.strip() for t in texts)
        n_new = int((ids[:, enc.input_ids.shape[1]:] != tok.pad_token_id).sum())
        print(f"{start + len(chunk)}/{len(prompts)}: {n_new / (time.time() - t0):.0f} tok/s",
              flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("assets/corpus.jsonl"))
    parser.add_argument("--stories", type=int, default=240)
    parser.add_argument("--explanations", type=int, default=120)
    parser.add_argument("--batch", type=int, default=60)
    parser.add_argument("--max-new", type=int, default=400)
    args = parser.parse_args()
    torch.set_num_threads(2)
    rng = random.Random(0)
    lm = load_lm()
    prompts = story_prompts(rng, args.stories) + explanation_prompts(rng, args.explanations)
    genres = ["story"] * args.stories + ["explanation"] * args.explanations
    texts = generate(lm, prompts, batch=args.batch, max_new=args.max_new, seed=0)
    rows = [
        {"genre": g, "prompt": p, "text": t}
        for g, p, t in zip(genres, prompts, texts, strict=True) if t
    ]
    rows += [{"genre": "docstring", "prompt": "", "text": d} for d in stdlib_docstrings()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    n_tokens = sum(len(lm.tokenizer(r["text"]).input_ids) for r in rows)
    print(f"wrote {len(rows)} documents, {n_tokens} tokens to {args.out}")


if __name__ == "__main__":
    main()
