"""SAE Atlas: what each layer of a language model computes, seen through sparse autoencoders.

`python app.py` builds the default atlas if it is missing (one TopK SAE per layer of the
embedded SmolLM2-135M-Instruct), then serves the app on http://127.0.0.1:7860.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gradio as gr
import pandas as pd

from sae_core.__main__ import _progress_bar
from sae_core.atlas import (
    ATLAS_ROOT,
    DEFAULT_ATLAS,
    LAYER_MAP_FILE,
    build_atlas,
    ensure_layer_map,
    is_built,
)
from sae_core.layermap import LayerMapData
from sae_core.layermap_view import (
    KIND_NAMES,
    TASK_NAMES,
    feature_table,
    heatmap_figure,
    lines_figure,
    present_labels,
    summary_rows,
)
from sae_core.plots import quality_by_layer

INTRO = """# SAE Atlas
A language model turns text into a long list of numbers at every layer. A **sparse
autoencoder (SAE)** rewrites each layer's numbers as a few active *features* out of thousands,
and features are often readable: "a French city", "the end of a sentence".
This page shows how faithful those rewrites are, layer by layer."""


def list_atlases(root: Path = ATLAS_ROOT) -> list[str]:
    return sorted(str(p) for p in root.glob("*") if is_built(p))


def atlas_summary(folder: str) -> tuple[str, pd.DataFrame, object]:
    """Markdown summary, per-layer metrics table and quality plot of one atlas."""
    if not folder or not is_built(Path(folder)):
        return "No atlas selected.", pd.DataFrame(), None
    info = json.loads((Path(folder) / "atlas.json").read_text())
    metrics = json.loads((Path(folder) / "metrics.json").read_text())
    cfg = info["train_cfg"]
    md = (
        f"**{info['model']}**, {len(metrics)} SAEs ({cfg['architecture']}, "
        f"{cfg['expansion']}x width, k={cfg['k']}), trained on {info['lm_tokens']:,} tokens "
        f"of `{info['corpus']}` in {info['train_seconds']:.0f} s. Metrics on "
        f"{next(iter(metrics.values()))['heldout_tokens']:,} held-out tokens."
    )
    table = pd.DataFrame([
        {"hookpoint": h, "FVU": round(m["fvu"], 4), "L0": round(m["l0"], 1),
         "dead % (held-out)": round(100 * m["dead_frac_heldout"], 2),
         "dead % (train)": round(100 * m.get("dead_frac_train", float("nan")), 2),
         "CE loss recovered": round(m["ce_recovered"], 4),
         "dropped tokens": m.get("dropped_tokens", 0)}
        for h, m in metrics.items()
    ])
    return md, table, quality_by_layer(metrics)


def build_saes_tab(atlas: Path) -> None:
    choices = sorted({*list_atlases(), *([str(atlas)] if is_built(atlas) else [])})
    with gr.Tab("SAEs"):
        gr.Markdown("Trained SAE sets and their quality on text they never saw. "
                    "*FVU*: share of the layer's variation the SAE misses. *L0*: features "
                    "active per token. *CE loss recovered*: how much of the model's ability "
                    "to predict the next word survives when the SAE replaces the layer.")
        first = str(atlas) if str(atlas) in choices else (choices[0] if choices else None)
        md, df, fig = atlas_summary(first)
        picker = gr.Dropdown(choices, value=first, label="SAE set")
        summary = gr.Markdown(md)
        plot = gr.Plot(fig)
        table = gr.Dataframe(df, interactive=False)
        picker.change(atlas_summary, picker, [summary, table, plot])


LAYER_MAP_INTRO = """Every SAE feature fires on some tokens. We tag each token with its part of
speech, grammatical role, entity type and word shape (spaCy), and give each feature the tag
most common among the tokens where it fires. Its **consistency** is the share of its firings
with that tag. A cell counts the features of a layer whose tag is that label and whose
consistency passes the threshold: where the bright cells sit says what a layer pays
attention to. The line chart repeats the count for two baselines that get the same number
of firings: the model's own neurons (each residual dimension, both signs) and random
directions. If SAE features sit above them, SAE features are more single-minded.
**Lift** is consistency divided by how common the label is: "no entity" covers ~90% of
tokens, so a feature earns it by chance; the lift minimum keeps such features out."""

THRESHOLD, MIN_SUPPORT, MIN_LIFT = 0.8, 20, 2.0


def build_layer_map_tab(lmap: LayerMapData | None) -> None:
    with gr.Tab("Layer map"):
        gr.Markdown(LAYER_MAP_INTRO)
        if lmap is None:
            gr.Markdown("*No layer map for this atlas yet: run `make run` to build it.*")
            return
        tasks = [(name, t) for t, name in TASK_NAMES.items()]
        kinds = [(name, k) for k, name in KIND_NAMES.items()]
        with gr.Row():
            task = gr.Radio(tasks, value="pos", label="Labelling task")
            kind = gr.Radio(kinds, value="sae", label="Features shown in the heatmap")
        with gr.Row():
            threshold = gr.Slider(0.3, 1.0, value=THRESHOLD, step=0.05,
                                  label="Consistency threshold")
            support = gr.Slider(1, 200, value=MIN_SUPPORT, step=1,
                                label="Minimum firings (support)")
            lift = gr.Slider(0, 10, value=MIN_LIFT, step=0.5, label="Minimum lift")
        heat = gr.Plot(heatmap_figure(lmap, "pos", THRESHOLD, MIN_SUPPORT, "sae", MIN_LIFT))
        lines = gr.Plot(lines_figure(lmap, "pos", THRESHOLD, MIN_SUPPORT, MIN_LIFT))
        summary = gr.Dataframe(summary_rows(lmap, THRESHOLD, MIN_SUPPORT, MIN_LIFT),
                               interactive=False, label="Accepted share, averaged over layers")
        gr.Markdown(f"Counts from {lmap.n_tokens:,} labelled tokens; features fire on "
                    f"{100 * lmap.fire_rate:.2f}% of tokens on average, and so do the baselines.")
        gr.Markdown("### Features in one cell")
        with gr.Row():
            layer_ids = [int(h.split(".")[1]) for h in lmap.hookpoints]
            layer = gr.Dropdown(layer_ids, value=layer_ids[len(layer_ids) // 2], label="Layer")
            first = [lmap.vocab["pos"][i] for i in present_labels(lmap, "pos")]
            label = gr.Dropdown(first, value=first[0], label="Label")
        cell = gr.Dataframe(interactive=False)

        def redraw(task, kind, thr, sup, lift):
            return (heatmap_figure(lmap, task, thr, int(sup), kind, lift),
                    lines_figure(lmap, task, thr, int(sup), lift),
                    summary_rows(lmap, thr, int(sup), lift))

        def relabel(task):
            names = [lmap.vocab[task][i] for i in present_labels(lmap, task)]
            return gr.Dropdown(choices=names, value=names[0])

        def cell_table(task, kind, thr, sup, lift, layer, label):
            try:
                return feature_table(lmap, task, int(layer), label, thr, int(sup), kind, lift)
            except ValueError as err:
                raise gr.Error(str(err)) from err

        controls = [task, kind, threshold, support, lift]
        # queue=False: these take milliseconds, so skip the queue's round trips
        for control in controls:
            control.change(redraw, controls, [heat, lines, summary], queue=False)
        task.change(relabel, task, label, queue=False)
        for control in [*controls, layer, label]:
            control.change(cell_table, [*controls, layer, label], cell, queue=False)


def load_layer_map(folder: Path) -> LayerMapData | None:
    path = folder / LAYER_MAP_FILE
    return LayerMapData.load(path) if path.exists() else None


def build_app(atlas: Path = DEFAULT_ATLAS, lmap: LayerMapData | None = None) -> gr.Blocks:
    with gr.Blocks(title="SAE Atlas") as demo:
        gr.Markdown(INTRO)
        build_layer_map_tab(lmap or load_layer_map(atlas))
        build_saes_tab(atlas)
    return demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--no-build", action="store_true", help="serve without building")
    args = parser.parse_args()
    lmap = None
    if not args.no_build:
        if not is_built(DEFAULT_ATLAS):
            print("Building the default atlas (one SAE per layer, then its layer map; about "
                  "17 + 3 minutes on 2 cores)...")
            build_atlas(DEFAULT_ATLAS, report=_progress_bar())
        lmap = ensure_layer_map(DEFAULT_ATLAS, report=_progress_bar())
    build_app(DEFAULT_ATLAS, lmap).launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
