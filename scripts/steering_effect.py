"""How much steering moves the text toward a concept, and what it costs in fluency.

For each preset resolved on the atlas measured (`<atlas>/presets.json`: the concepts of
assets/steering_presets.json, each with the feature found for it on this atlas; resolved now
if missing or stale, see sae_core/steer/presets.py) and each strength of a grid, greedy
generation from a few neutral prompts, all strengths of one prompt in one batch (strength
0 = the unsteered row). Presets that found no visibly steering feature are listed and
skipped. Measured per strength:
- concept_prob: the steered model's next-token probability mass on the concept's words
  (concept_tokens.py: " ocean", "ocean", " Ocean", ...), averaged over the positions
  it wrote;
- mention_rate: share of continuations that contain a concept word;
- perplexity: of the steered continuation under the unsteered model (fluency; the greedy
  unsteered text scores low by construction).
Writes a JSON of all numbers, a markdown table and a figure (Plotly, shot with chromium).

    flock /tmp/bench.lock .venv/bin/python scripts/steering_effect.py [--atlas FOLDER]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sae_core.atlas.layout import DEFAULT_ATLAS
from sae_core.norms import typical_norms
from sae_core.progress import console_report
from sae_core.steer.concept_tokens import concept_token_ids
from sae_core.steer.edits import Steering
from sae_core.steer.fluency import perplexity
from sae_core.steer.generation import GenConfig, generate, prompt_ids, side_by_side
from sae_core.steer.presets import ResolvedPreset, ensure_presets
from ui.saes.lab_figures import save_figure
from ui.serving import session

PROMPTS = ("Write a short story.", "Tell me about your weekend.", "Describe your ideal house.",
           "Give me three tips for a job interview.")
STRENGTHS = (0.0, 0.15, 0.3, 0.45, 0.6, 0.8, 1.0)
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


def geometric_mean(values: list[float]) -> float:
    """Over the continuations that wrote something (an empty one has no perplexity)."""
    logs = [math.log(v) for v in values if v == v]
    return math.exp(sum(logs) / len(logs)) if logs else float("nan")


def measure(loaded, preset: ResolvedPreset, strengths, prompts, n_tokens: int) -> dict:
    lm, saes, c = loaded.lm, loaded.saes, preset.concept
    norms, _ = typical_norms(lm, saes, [f.hookpoint for f in preset.features],
                             corpus=loaded.corpus)
    words = concept_token_ids(lm.tokenizer, c.concept_words)
    word_re = re.compile(r"\b(" + "|".join(map(re.escape, c.concept_words)) + r")",
                         re.IGNORECASE)
    # the preset's recipe scaled so that its first feature is at strength s
    rows = [Steering(tuple(replace(f, strength=s * f.strength / preset.strength)
                           for f in preset.features)) if s else None for s in strengths]
    gen = GenConfig(max_new_tokens=n_tokens)
    per = {s: {"concept_prob": [], "mention": [], "ppl": [], "texts": []} for s in strengths}
    for prompt in prompts:
        ids = prompt_ids(lm, prompt, gen)
        probs: list[torch.Tensor] = []
        outs = generate(lm, saes, norms, ids, rows, gen, outlier_factor=loaded.outlier_factor,
                        on_step=lambda lg, probs=probs: probs.append(
                            lg.softmax(-1)[:, words].sum(-1)))
        prob_TB = torch.stack(probs)
        for b, (s, new) in enumerate(zip(strengths, outs, strict=True)):
            text = lm.tokenizer.decode(new, skip_special_tokens=True)
            written = max(len(new), 1)
            per[s]["concept_prob"].append(float(prob_TB[:written, b].mean()))
            per[s]["mention"].append(bool(word_re.search(text)))
            per[s]["ppl"].append(perplexity(lm, ids, new))
            per[s]["texts"].append(text)
    return {str(s): {"concept_prob": sum(v["concept_prob"]) / len(prompts),
                     "mention_rate": sum(v["mention"]) / len(prompts),
                     "perplexity": geometric_mean(v["ppl"]),
                     "texts": v["texts"]} for s, v in per.items()}


def as_in_the_app(loaded, preset: ResolvedPreset) -> dict:
    """The preset run exactly as the Steering tab runs it: both texts side by side."""
    c = preset.concept
    out = side_by_side(loaded, c.prompt, preset.steering(), c.gen())
    return {"prompt": c.prompt, "layer": preset.layer, "feature": preset.feature,
            "strength": preset.strength, "more": preset.extra, "unsteered": out.unsteered,
            "steered": out.steered,
            "seconds": round(out.seconds, 2)}


def figure(results: dict, strengths) -> go.Figure:
    fig = make_subplots(rows=1, cols=3, subplot_titles=(
        "P(concept word next), steered model", "continuations that name the concept",
        "perplexity under the unsteered model (fluency)"))
    for i, (name, res) in enumerate(results.items()):
        xs, color = list(strengths), COLORS[i % len(COLORS)]
        for col, key in enumerate(("concept_prob", "mention_rate", "perplexity"), 1):
            fig.add_scatter(x=xs, y=[res[str(s)][key] for s in xs], mode="lines+markers",
                            name=name, legendgroup=name, showlegend=col == 1, row=1, col=col,
                            line=dict(color=color))
    fig.update_xaxes(title_text="strength (x the layer's typical residual norm)")
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=3)
    fig.update_layout(height=440, width=1400, margin=dict(t=40, b=40, l=60, r=20),
                      legend=dict(orientation="h", y=-0.22))
    return fig


def screenshot(fig: go.Figure, png: Path) -> None:
    written = save_figure(fig, png.with_suffix(""))
    png.with_suffix(".html").unlink()  # the PNG is the figure of record
    if png not in written:
        raise RuntimeError("no chromium to draw the figure with (apt-get install chromium)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atlas", default=str(DEFAULT_ATLAS))
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("docs/steering_effect"))
    parser.add_argument("--presets", nargs="*", help="slugs or names (default: all)")
    parser.add_argument("--replot", action="store_true",
                        help="redraw the figure from the JSON of an earlier run")
    args = parser.parse_args()
    if args.replot:
        saved = json.loads(args.out.with_suffix(".json").read_text())
        screenshot(figure(saved["results"], saved["strengths"]), args.out.with_suffix(".png"))
        return
    loaded = session.open_atlas(args.atlas)
    resolved = ensure_presets(args.atlas, loaded, report=console_report())
    for line in resolved.failed:
        print(f"left out: {line}")
    presets = [p for p in resolved.presets
               if not args.presets or {p.slug, p.name} & set(args.presets)]
    results, shown, t0 = {}, {}, time.perf_counter()
    for p in presets:
        shown[p.name] = as_in_the_app(loaded, p)
        print(f"## {p.name}\n{json.dumps(shown[p.name], indent=1)}", flush=True)
        results[p.name] = measure(loaded, p, STRENGTHS, PROMPTS, args.tokens)
        print(f"{p.name}: done at {time.perf_counter() - t0:.0f} s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"atlas": str(args.atlas), "prompts": PROMPTS, "strengths": STRENGTHS,
         "tokens": args.tokens,
         "presets_as_in_the_app": shown, "results": results}, indent=1))
    print("| preset | " + " | ".join(f"{s:g}" for s in STRENGTHS) + " |")
    print("|---|" + "---|" * len(STRENGTHS))
    for name, res in results.items():
        cells = [f"{100 * res[str(s)]['concept_prob']:.2f}% / {res[str(s)]['mention_rate']:.2f}"
                 f" / {res[str(s)]['perplexity']:.1f}" for s in STRENGTHS]
        print(f"| {name} | " + " | ".join(cells) + " |")
    screenshot(figure(results, STRENGTHS), args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')} "
          f"in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
