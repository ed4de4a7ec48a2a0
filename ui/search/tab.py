"""The Search tab: features by the text they fire on (all layers) or by their label."""

from __future__ import annotations

from typing import NamedTuple

import gradio as gr
import pandas as pd

from sae_core.errors import check_number, check_whole
from sae_core.explore.layermap import MAP_TASKS, read_layer_map
from sae_core.explore.names import readable_names
from sae_core.explore.search import (
    MAX_NAME_QUERY_CHARS,
    LabelHit,
    NameHit,
    TextHit,
    corpus_peaks,
    features_by_label,
    features_by_name,
    search_text,
)

from ..layer_map.view import TASK_NAMES, present_labels
from ..live.tab import notices_md, open_loaded
from ..serving import builds
from ..serving.errors import friendly, text_arg
from ..shared.choice import HINT
from ..shared.sites import hookpoint_at, layer_choices, layer_key, site_label

SEARCH_INTRO = """**By text**: the features, over all layers, that fire most on your word or
sentence, and on which token; below them, the features whose *name* contains it (a name lists
the tokens a feature fires on, its label, and after → the tokens it promotes; F1 says how well
the name predicts where it fires). *Score* = activation divided by the layer's typical
residual norm, so layers compare on one scale; or divided by the feature's own top activation
in the corpus (1 = as strong as its best example there; needs the feature index). **By
label**: features whose layer-map label matches, e.g. layer 12, part of speech PROPN,
consistency ≥ 0.9."""
ALL_LAYERS = "all layers"
SHOWN = 200
MAX_QUERY_CHARS = 2000
"""Longest text searched (the first 256 tokens are read)."""
"""Rows of a label search that are listed."""


class SearchTab(NamedTuple):
    tables: tuple[gr.Dataframe, gr.Dataframe, gr.Dataframe]
    """Text hits, label hits and name hits; a click on a row chooses that feature."""
    chosen_md: gr.Markdown


def _keyed(table: pd.DataFrame) -> pd.DataFrame:
    """The "layer" column as layer keys (ui/shared/sites.py), without the hookpoint column."""
    if len(table):
        table["layer"] = [layer_key(h) for h in table["hookpoint"]]
    return table.drop(columns="hookpoint")


def text_table(hits: list[TextHit]) -> pd.DataFrame:
    """The hits; the "name" column only when some feature has a name."""
    table = _keyed(pd.DataFrame(hits, columns=TextHit._fields))
    if not any(h.name for h in hits):
        table = table.drop(columns="name")
    return table.round({"activation": 2, "score": 3})


def name_table(hits: list[NameHit]) -> pd.DataFrame:
    table = _keyed(pd.DataFrame(hits, columns=NameHit._fields))
    table["weak"] = table["weak"].map({True: "? weak fit", False: ""})
    return table.round({"f1": 2, "precision": 2, "recall": 2})


@friendly("searching the names")
def run_name_search(folder: str, text: str):
    """(table, status line) of the features whose name contains the text."""
    text = text_arg(text, "The search text", MAX_QUERY_CHARS)
    if not text.strip():
        return name_table([]), ""  # the text search, run by the same click, says so
    names = readable_names(open_loaded(folder).folder)
    if names is None:
        return name_table([]), "*This SAE set has no feature names yet.*"
    hits = features_by_name(names, text[:MAX_NAME_QUERY_CHARS], limit=SHOWN)
    status = (f"{len(hits)} feature(s) whose name contains {text.strip()[:40]!r}"
              + (f" (the first {SHOWN})." if len(hits) == SHOWN else "."))
    return name_table(hits), status


def label_table(hits: list[LabelHit]) -> pd.DataFrame:
    return _keyed(pd.DataFrame(hits, columns=LabelHit._fields)).round({"consistency": 3,
                                                                        "lift": 1})


@friendly("searching the text")
def run_search(folder: str, text: str, score: str = "norm"):
    """(table, notices) of the features that fire most on `text`."""
    text = text_arg(text, "The search text", MAX_QUERY_CHARS)
    loaded = open_loaded(folder)
    reference = None
    if score == "peak":
        reference = corpus_peaks(folder)
        if reference is None:
            raise gr.Error("This SAE set has no feature index yet (the Features tab builds "
                           "it); score by the layer's typical norm instead.")
    hits, view = search_text(loaded, text, reference=reference)
    return text_table(hits), notices_md(view)


@friendly("searching by label")
def run_label_search(folder: str, layer, task: str, label: str, consistency: float,
                     support: float):
    """(table, status line) of the features with that label."""
    lmap = read_layer_map(open_loaded(folder).folder)
    if lmap is None:
        raise gr.Error("This SAE set has no layer map yet, so its features have no labels.")
    where = None if layer in (None, ALL_LAYERS) else _where(lmap, layer)
    consistency = check_number(consistency, "consistency", 0, 1, from_text=True)
    support = check_whole(support, "support", 0, from_text=True)
    hits = features_by_label(lmap, where, task, label, consistency, support)
    if hits:
        status = f"{len(hits)} feature(s); the {SHOWN} most consistent are listed."
    else:
        best = features_by_label(lmap, where, task, label, 0.0, support, limit=1)
        status = "No feature passes these filters." + (
            f" The most consistent {label} feature with that support has consistency "
            f"{best[0].consistency:.2f} (layer {site_label(best[0].hookpoint)}, feature "
            f"{best[0].feature})." if best else "")
    return label_table(hits[:SHOWN]), status


@friendly("listing the labels")
def label_choices(folder: str, task: str):
    lmap = read_layer_map(open_loaded(folder).folder)
    if lmap is not None and (not isinstance(task, str) or task not in lmap.vocab):
        raise gr.Error(f"task must be one of {', '.join(lmap.vocab)}, got {task!r:.40}")
    names = [] if lmap is None else [lmap.vocab[task][i] for i in present_labels(lmap, task)]
    return gr.Dropdown(choices=names, value=names[0] if names else None)


def _where(lmap, layer) -> str:
    """The layer map's hookpoint that a layer key names (a bare number: residual first)."""
    return hookpoint_at(lmap.hookpoints, layer, "this layer map")


def static_layers(folder: str | None) -> tuple[list, list[str]]:
    """Layer choices (every SAE of the layer map, by key) and POS labels of the atlas's
    layer map, without loading it or the model."""
    lmap = read_layer_map(folder)
    if lmap is None:
        return [(ALL_LAYERS, ALL_LAYERS)], []
    return [(ALL_LAYERS, ALL_LAYERS), *layer_choices(lmap.hookpoints)], list(lmap.vocab["pos"])


def build_search_tab(picker: gr.Dropdown, *, refreshed: gr.Textbox | None = None) -> SearchTab:
    """`picker` holds the active atlas folder; `refreshed` says a part of it was built."""
    with gr.Tab("Search", id="search"):
        gr.Markdown(SEARCH_INTRO)
        with gr.Row():
            query = gr.Textbox("Paris", label="Word or sentence", scale=4,
                               max_length=MAX_QUERY_CHARS)
            score = gr.Radio([("activation / layer's typical norm", "norm"),
                              ("activation / feature's corpus peak", "peak")], value="norm",
                             label="Score", scale=2)
            go = gr.Button("Search by text", scale=1)
        search_notice = gr.Markdown()
        hits = gr.Dataframe(interactive=False, label="Features that fire most on the text")
        name_status = gr.Markdown()
        name_hits = gr.Dataframe(interactive=False, label="Features whose name contains it")
        layers, pos_labels = static_layers(picker.value)
        with gr.Row():
            layer = gr.Dropdown(layers, value=ALL_LAYERS, label="Layer")
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
        chosen_md = gr.Markdown(HINT)
        go.click(run_search, [picker, query, score], [hits, search_notice])
        query.submit(run_search, [picker, query, score], [hits, search_notice])
        for event in (go.click, query.submit):
            event(run_name_search, [picker, query], [name_hits, name_status])
        task.change(label_choices, [picker, task], label)
        by_label.click(run_label_search, [picker, layer, task, label, consistency, support],
                       [label_hits, label_status])
        gr.on(builds.atlas_events(picker, refreshed),
              lambda f: gr.Dropdown(choices=static_layers(f)[0], value=ALL_LAYERS), picker, layer
              ).then(lambda f, t: label_choices(f, t) if f else gr.skip(), [picker, task], label)
    return SearchTab((hits, label_hits, name_hits), chosen_md)
