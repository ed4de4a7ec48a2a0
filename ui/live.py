"""The Live view tab (features per token as you type) and the Search tab (by text, by label)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from sae_core import session
from sae_core.layermap import MAP_TASKS
from sae_core.layermap_view import TASK_NAMES, present_labels
from sae_core.live import live_view
from sae_core.live_view import heatmap, token_choices, token_table
from sae_core.search import corpus_peaks, features_by_label, search_text

EXAMPLE = ("Marie Curie moved to Paris in 1891. She won two Nobel prizes, and her notebooks "
           "are still radioactive today! 🙂")
LIVE_INTRO = """Type or paste text: every row is a token, every column a layer, and each cell
the feature that fires most strongly there (hover for its id and label). Grey cells are
tokens with a *massive activation* (the first token, and a few others): the SAEs were not
trained on them. Pick a token below to see its strongest features at every layer; click a
row of any table to choose that feature."""
SEARCH_INTRO = """**By text**: the features, over all layers, that fire most on your word or
sentence, and on which token. *Score* = activation divided by the layer's typical residual
norm, so layers compare on one scale; or divided by the feature's own top activation in the
corpus (1 = as strong as its best example there; needs the feature index). **By label**:
features whose layer-map label matches, e.g. layer 12, part of speech PROPN, consistency
≥ 0.9."""
ALL_LAYERS = "all layers"


@dataclass(frozen=True)
class LiveTab:
    chosen: gr.State
    """(layer, feature) of the last table row the user clicked; None before any click."""
    chosen_md: tuple[gr.Markdown, gr.Markdown]
    """Say which feature is chosen (one in each tab)."""


def _open(folder: str):
    if not folder:
        raise gr.Error("Choose an SAE set first.")
    try:
        return session.open_atlas(folder)
    except (OSError, ValueError) as err:
        raise gr.Error(f"Could not open the SAE set: {err}") from err


def _notices(view) -> str:
    return "\n".join(f"*{n}*" for n in view.notices)


def run_live(folder: str, text: str):
    """(heatmap, notice, token picker, token table, view) for the text."""
    loaded = _open(folder)
    try:
        view = live_view(loaded, text)
    except ValueError as err:
        raise gr.Error(str(err)) from err
    lmap = loaded.layer_map
    choices = token_choices(view)
    first = next((i for i in range(view.n_tokens) if not view.flagged_TL[i].all()), 0)
    return (heatmap(view, lmap), _notices(view), gr.Dropdown(choices=choices, value=first),
            token_table(view, first, lmap), view)


def pick_token(folder: str, view, token):
    if view is None or token is None:
        return pd.DataFrame()
    try:
        return token_table(view, int(token), _open(folder).layer_map)
    except ValueError as err:
        raise gr.Error(str(err)) from err


def run_search(folder: str, text: str, score: str = "norm"):
    loaded = _open(folder)
    reference = None
    if score == "peak":
        reference = corpus_peaks(folder)
        if reference is None:
            raise gr.Error("This SAE set has no feature index yet (the Features tab builds "
                           "it); score by the layer's typical norm instead.")
    try:
        table, view = search_text(loaded, text, reference=reference)
    except ValueError as err:
        raise gr.Error(str(err)) from err
    return table, _notices(view)


def run_label_search(folder: str, layer, task: str, label: str, consistency: float,
                     support: float):
    """(table, status line) of the features with that label."""
    lmap = _open(folder).layer_map
    if lmap is None:
        raise gr.Error("This SAE set has no layer map yet, so its features have no labels.")
    where = None if layer in (None, ALL_LAYERS) else int(layer)
    try:
        table = features_by_label(lmap, where, task, label, float(consistency), int(support))
    except ValueError as err:
        raise gr.Error(str(err)) from err
    if len(table):
        status = f"{len(table)} feature(s); the 200 most consistent are listed."
    else:
        best = features_by_label(lmap, where, task, label, 0.0, int(support), limit=1)
        status = "No feature passes these filters." + (
            f" The most consistent {label} feature with that support has consistency "
            f"{best['consistency'][0]:.2f} (layer {best['layer'][0]}, feature "
            f"{best['feature'][0]})." if len(best) else "")
    return table.head(200).round({"consistency": 3, "lift": 1}), status


def label_choices(folder: str, task: str):
    lmap = _open(folder).layer_map
    names = [] if lmap is None else [lmap.vocab[task][i] for i in present_labels(lmap, task)]
    return gr.Dropdown(choices=names, value=names[0] if names else None)


def choose(table: pd.DataFrame, evt: gr.SelectData):
    """(layer, feature) of the clicked row; the first two columns of every table."""
    row = evt.row_value if evt.row_value is not None else table.iloc[evt.index[0]].tolist()
    try:
        chosen = (int(row[0]), int(row[1]))
    except (TypeError, ValueError, IndexError):
        return gr.skip(), gr.skip(), gr.skip()  # a row with no feature (massive activation)
    md = f"Chosen: **layer {chosen[0]}, feature {chosen[1]}**"
    return chosen, md, md


def _static_layers(folder: str | None) -> tuple[list, list[str]]:
    """Layers and POS labels read from the atlas's json files (no model load at build)."""
    try:
        meta = json.loads((Path(folder) / "layer_map.json").read_text())
    except (TypeError, OSError, ValueError):
        return [ALL_LAYERS], []
    layers = [int(h.split(".")[1]) for h in meta["hookpoints"] if h.count(".") == 1]
    return [ALL_LAYERS, *layers], list(meta["vocab"]["pos"])


def build_live_tab(picker: gr.Dropdown) -> LiveTab:
    """Two tabs, Live view and Search; returns the chosen-feature state for other tabs."""
    chosen = gr.State(None)
    with gr.Tab("Live view") as tab:
        gr.Markdown(LIVE_INTRO)
        text = gr.Textbox(EXAMPLE, lines=3, label="Text (up to 256 tokens are shown)")
        notice = gr.Markdown()
        plot = gr.Plot()
        with gr.Row():
            token = gr.Dropdown([], label="Token", scale=1)
            chosen_md = gr.Markdown("Click a table row to choose a feature.")
        table = gr.Dataframe(interactive=False, label="Strongest features of the token, "
                             "per layer", elem_id="live-token-table")
        view = gr.State(None)
        live_out = [plot, notice, token, table, view]
        tab.select(run_live, [picker, text], live_out)
        # always_last: while typing, only the newest text is computed once a run finishes
        text.change(run_live, [picker, text], live_out, trigger_mode="always_last",
                    show_progress="hidden")
        picker.change(run_live, [picker, text], live_out)
        token.input(pick_token, [picker, view, token], table)
    with gr.Tab("Search"):
        gr.Markdown(SEARCH_INTRO)
        with gr.Row():
            query = gr.Textbox("Paris", label="Word or sentence", scale=4)
            score = gr.Radio([("activation / layer's typical norm", "norm"),
                              ("activation / feature's corpus peak", "peak")], value="norm",
                             label="Score", scale=2)
            go = gr.Button("Search by text", scale=1)
        search_notice = gr.Markdown()
        hits = gr.Dataframe(interactive=False, label="Features that fire most on the text")
        layers, pos_labels = _static_layers(picker.value)
        with gr.Row():
            layer = gr.Dropdown(layers, value=layers[0], label="Layer")
            task = gr.Dropdown([(TASK_NAMES[t], t) for t in MAP_TASKS], value="pos",
                               label="Labelling task")
            label = gr.Dropdown(pos_labels, value="PROPN" if "PROPN" in pos_labels else None,
                                label="Label")
        with gr.Row():
            consistency = gr.Slider(0, 1, value=0.6, step=0.05, label="Minimum consistency")
            support = gr.Slider(1, 200, value=20, step=1, label="Minimum firings (support)")
            by_label = gr.Button("Search by label")
        label_status = gr.Markdown()
        label_hits = gr.Dataframe(interactive=False, label="Features with that label")
        search_md = gr.Markdown("Click a table row to choose a feature.")
        go.click(run_search, [picker, query, score], [hits, search_notice])
        query.submit(run_search, [picker, query, score], [hits, search_notice])
        task.change(label_choices, [picker, task], label)
        by_label.click(run_label_search, [picker, layer, task, label, consistency, support],
                       [label_hits, label_status])
        picker.change(lambda f: gr.Dropdown(choices=_static_layers(f)[0], value=ALL_LAYERS),
                      picker, layer)
    for t in (table, hits, label_hits):
        t.select(choose, t, [chosen, chosen_md, search_md])
    return LiveTab(chosen=chosen, chosen_md=(chosen_md, search_md))
