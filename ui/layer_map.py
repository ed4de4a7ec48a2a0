"""The Layer map tab: which labels each layer's features stand for."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from sae_core.atlas import LAYER_MAP_FILE
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
