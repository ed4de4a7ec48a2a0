"""The Layer map tab: which labels each layer's features stand for."""

from __future__ import annotations

from typing import NamedTuple

import gradio as gr

from sae_core.atlas.layout import control_atlases
from sae_core.errors import check_number, check_whole
from sae_core.explore.layermap import CRITERIA, LayerMapData, read_layer_map
from sae_core.explore.lineage import read_lineage
from sae_core.explore.names import readable_names
from sae_core.explore.probing import read_probing

from ..serving import builds
from ..serving.errors import friendly
from ..shared.lineage_view import turnover_figure
from ..shared.names_view import detected_figure
from ..shared.present import numbers_accordion
from ..shared.sites import layer_choices
from .probing_view import probing_figure
from .view import (
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
attention to. The line chart repeats the count for baselines that were never trained, each
paired with an SAE feature and firing on as many tokens as it does: the model's own neurons
(each residual dimension, both signs), random directions, and random directions after
whitening (so a few very loud tokens cannot decide what every random direction fires on);
and a random dictionary as wide as the SAE where every token fires its k largest, as in the
SAE. If SAE features sit above all of them, SAE features are more single-minded. Shaded
bands: the 95% range when the documents are drawn again (a bootstrap), shown at the
default settings. Dashed lines, where such an SAE set was built: the same recipe on the same
text through a randomly initialised copy of the model. What it shows too comes from SAEs
and token statistics, not from what the model learned.
**Lift** is consistency divided by how common the label is: "no entity" covers ~90% of
tokens, so a feature earns it by chance; the lift minimum keeps such features out."""

EVIDENCE_INTRO = """### How much of each task a few features carry
A **probe** is a tiny classifier. For each label (say, "noun"), we pick the k SAE features
whose activity differs most between tokens with and without it, train the probe on half of
the tokens of documents the SAEs never trained on and score it on the other half (F1: 1 is
perfect, near 0 is useless). The dotted lines are the controls: k of the model's own neurons
chosen the same way, and a probe that reads the whole residual stream (the most a linear
reader can get); dashed, the SAEs of a randomly initialised model where one was built."""
TURNOVER_INTRO = """### Where each layer's features carry on, and where they turn over
For each feature, is there a feature in the next layer that writes almost the same direction
(decoder cosine above 0.7)? A high share means the layer passes its features on; a dip means
the representation changes there."""
NAMES_INTRO = """### How many features a plain name explains
Each feature gets a name from the tokens it fires on and its label (learnt on half the
labelled tokens). Does "fires on *the* or *a*" predict where it fires on the other half?
The share of features whose name does (F1 at least 0.5), layer by layer."""

THRESHOLD, MIN_SUPPORT, MIN_LIFT = CRITERIA
NO_MAP = ("*This SAE set has no layer map yet. Building one labels ~45k corpus tokens with "
          "spaCy and runs the model over them once.*")


def missing_text(folder: str | None, *, now: bool = True) -> str:
    """Why the tab has no map: none built for this set yet, or no set yet at all."""
    return NO_MAP if folder else f"*{builds.waiting_text('The layer map', now=now)}*"


class LayerMapTab(NamedTuple):
    layer: gr.Dropdown
    cell: gr.Dataframe
    """The features of the chosen cell; selecting a row can open that feature's page."""


def _layer_ids(lmap: LayerMapData | None) -> list[tuple[str, int | str]]:
    """(shown text, layer key) per SAE of the map (ui/shared/sites.py)."""
    return layer_choices(lmap.hookpoints) if lmap else []


def _labels(lmap: LayerMapData | None, task: str) -> list[str]:
    return [lmap.vocab[task][i] for i in present_labels(lmap, task)] if lmap else []


def check_controls(lmap: LayerMapData, task, kind, thr, sup, lift) -> tuple:
    """(threshold, support, lift) checked, or a ValueError naming the control."""
    if not isinstance(task, str) or task not in lmap.vocab:
        raise ValueError(f"task must be one of {', '.join(lmap.vocab)}, got {task!r:.40}")
    if not isinstance(kind, str) or kind not in KIND_NAMES:
        raise ValueError(f"kind must be one of {', '.join(KIND_NAMES)}, got {kind!r:.40}")
    return (check_number(thr, "threshold", 0, 1), check_whole(sup, "support", 0),
            check_number(lift, "lift", 0, 1e6))


def random_model_twin(folder) -> str | None:
    """The folder of this atlas's twin built through a randomly initialised copy of the
    model (same recipe, same tokens: atlas/layout.control_atlases), None without one."""
    if not folder:
        return None
    twin = control_atlases(folder).get("random-init")
    return str(twin) if twin else None


@friendly("drawing the layer map")
def redraw(folder, task, kind, thr, sup, lift):
    lmap = read_layer_map(folder)
    if lmap is None:
        return None, None, None, ""
    thr, sup, lift = check_controls(lmap, task, kind, thr, sup, lift)
    control = read_layer_map(random_model_twin(folder))
    return (heatmap_figure(lmap, task, thr, int(sup), kind, lift),
            lines_figure(lmap, task, thr, int(sup), lift, control=control),
            summary_rows(lmap, thr, int(sup), lift, control=control),
            f"Counts from {lmap.n_tokens:,} labelled tokens; features fire on "
            f"{100 * lmap.fire_rate:.2f}% of tokens on average, and each baseline as often "
            "as the SAE feature it is paired with.")


@friendly("drawing the probes, the turnover and the names")
def evidence(folder, task):
    """(probing, turnover, names figure): None for what this atlas has not computed yet."""
    if not folder:
        return None, None, None
    if not isinstance(task, str) or task not in TASK_NAMES:
        raise ValueError(f"task must be one of {', '.join(TASK_NAMES)}, got {task!r:.40}")
    probes, lineage, names = read_probing(folder), read_lineage(folder), readable_names(folder)
    twin = random_model_twin(folder)
    return (probing_figure(probes, task, control=read_probing(twin)) if probes else None,
            turnover_figure(lineage, control=read_lineage(twin)) if lineage else None,
            detected_figure(names, control=readable_names(twin)) if names else None)


def build_layer_map_tab(picker: gr.Dropdown, *, refreshed: gr.Textbox | None = None
                        ) -> LayerMapTab:
    """`picker` holds the active atlas folder; everything here follows it, and redraws when
    `refreshed` says a part of the atlas was built (ui/serving/builds.py)."""
    with gr.Tab("Layer map", id="layer-map"):
        gr.Markdown(LAYER_MAP_INTRO)
        lmap = read_layer_map(picker.value)
        first = picker.value
        missing = gr.Markdown(missing_text(first, now=False), visible=lmap is None)
        build = gr.Button("Build the layer map (a few minutes)",
                          visible=lmap is None and bool(first))
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
        fig, line_fig, rows, text = redraw(picker.value, "pos", "sae", THRESHOLD, MIN_SUPPORT,
                                           MIN_LIFT)
        heat, lines = gr.Plot(fig), gr.Plot(line_fig)
        with numbers_accordion():
            summary = gr.Dataframe(rows, interactive=False,
                                   label="Accepted share, averaged over layers")
            note = gr.Markdown(text)
        gr.Markdown("### Features in one cell")
        gr.Markdown("Select a row to open that feature's page.")
        with gr.Row():
            ids = _layer_ids(lmap)
            layer = gr.Dropdown(ids, value=ids[len(ids) // 2][1] if ids else None,
                                label="Layer")
            names = _labels(lmap, "pos")
            label = gr.Dropdown(names, value=names[0] if names else None, label="Label")
        cell = gr.Dataframe(interactive=False)
        probing_fig, turnover_fig, names_fig = evidence(picker.value, "pos")
        gr.Markdown(EVIDENCE_INTRO)
        probes = gr.Plot(probing_fig)
        gr.Markdown(TURNOVER_INTRO)
        turnover = gr.Plot(turnover_fig)
        gr.Markdown(NAMES_INTRO)
        named = gr.Plot(names_fig)

        @friendly("listing the labels")
        def relabel(folder, task):
            names = _labels(read_layer_map(folder), task)
            return gr.Dropdown(choices=names, value=names[0] if names else None)

        @friendly("switching the SAE set")
        def switch_atlas(folder, task):
            lmap = read_layer_map(folder)
            ids = _layer_ids(lmap)
            return (gr.Markdown(missing_text(folder), visible=lmap is None),
                    gr.Button(visible=lmap is None and bool(folder)),
                    gr.Dropdown(choices=ids, value=ids[len(ids) // 2][1] if ids else None),
                    relabel(folder, task))

        @friendly("listing the cell's features")
        def cell_table(folder, task, kind, thr, sup, lift, layer, label):
            lmap = read_layer_map(folder)
            if lmap is None or layer is None or label is None:
                return None
            thr, sup, lift = check_controls(lmap, task, kind, thr, sup, lift)
            return feature_table(lmap, task, layer, label, thr, int(sup), kind, lift,
                                 names=readable_names(folder))

        @friendly("starting the layer map")
        def build_map(folder):
            return gr.Markdown(builds.build_parts(folder, "layer map"), visible=True)

        controls = [task, kind, threshold, support, lift]
        draw_outputs = [heat, lines, summary, note]
        # queue=False: these take milliseconds, so skip the queue's round trips
        for control in controls:
            control.change(redraw, [picker, *controls], draw_outputs, queue=False)
        task.change(relabel, [picker, task], label, queue=False)
        task.change(evidence, [picker, task], [probes, turnover, named], queue=False)
        switched = [missing, build, layer, label]
        gr.on(builds.atlas_events(picker, refreshed), switch_atlas, [picker, task], switched
              ).then(redraw, [picker, *controls], draw_outputs
                     ).then(evidence, [picker, task], [probes, turnover, named])
        build.click(build_map, picker, missing)
        for control in [*controls, layer, label]:
            control.change(cell_table, [picker, *controls, layer, label], cell, queue=False)
    return LayerMapTab(layer, cell)
