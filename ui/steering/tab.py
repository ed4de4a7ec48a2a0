"""The Steering tab: the same prompt written with and without a feature pushed, side by side."""

from __future__ import annotations

import html
import os
from typing import NamedTuple

import gradio as gr

from sae_core.activations import layer_of
from sae_core.atlas.layout import read_info
from sae_core.explore.names import readable_names
from sae_core.steer.generation import MAX_NEW_TOKENS, MAX_PROMPT_CHARS

from ..serving.errors import friendly
from ..shared.names_view import name_at_layer
from ..shared.present import numbers_accordion
from .finder import EXPLAIN, find_features, use_suggestion, write_baselines
from .inputs import (
    MAX_CONCEPT_CHARS,
    MAX_EXTRA_CHARS,
    MAX_FEATURE,
    MAX_LAYER,
    MAX_RELATED_CHARS,
    MAX_SEED,
    whole,
)
from .judge import compare_panel, connect_judge, score_panel
from .presets import (
    first_controls,
    prepare_presets,
    preset_choices,
    preset_controls,
    refresh_presets,
)
from .write import DIFF_COLORS, stream_steering

STEER_CONCURRENCY = max(2, os.cpu_count() or 2)
"""Steering requests that run at once; more wait in the queue. Hooks act only in their own
thread, so concurrent requests never see each other's edits; more requests than cores would
only slow each other down (small matmuls suffer most when threads outnumber cores)."""
INTRO = """Pick a feature and a strength: while the model writes, the feature's direction is
added to its numbers at that layer. Left: the model as it is; right: the same prompt and the
same random draws with the feature pushed. Words that differ are highlighted.
**Strength** is measured in units of the layer's typical size, so the same value means the
same push at every layer: around 0.3-0.6 usually changes the topic; from about 0.8 the text
starts to repeat itself or fall apart. **Clamp** instead sets the feature's own value (and
nothing else) to that strength. Don't know a feature number? Search for a word below.
The layer number picks that layer's residual-stream SAE; a set without one there steers
with the layer's MLP-output SAE, else its attention-output one."""


class SteeringTab(NamedTuple):
    """What another tab needs to hand a feature over: set `layer` and `feature` (and maybe
    `strength`), then select `tab` (id "steering") or chain `run.click`. Setting `preset` to
    a slug ("ocean") loads that preset of the active SAE set into the controls."""

    tab: gr.Tab
    layer: gr.Number
    feature: gr.Number
    strength: gr.Slider
    run: gr.Button
    preset: gr.Dropdown


def feature_name_line(folder: str | None, layer, feature) -> str:
    """The chosen feature's name and F1 under the picker ("" when the set has no names)."""
    name = name_at_layer(readable_names(folder), layer, feature) if folder else None
    return "" if name is None else f"Feature name: <code>{html.escape(name.short())}</code>"


def _n_layers(folder: str | None) -> int:
    """Layers the atlas covers (last + 1), from atlas.json: no model load to build the tab."""
    try:
        return 1 + max(layer_of(h) for h in read_info(folder).hookpoints)
    except (TypeError, OSError, ValueError, KeyError, IndexError):
        return 30


def build_steering_tab(picker: gr.Dropdown, *, refreshed: gr.Textbox | None = None
                       ) -> SteeringTab:
    """`picker` holds the active atlas folder; `refreshed` says a part of it was built
    (ui/serving/builds.py), e.g. its presets."""
    n = _n_layers(picker.value)
    first = first_controls(picker.value, n)
    choices, note, missing = preset_choices(picker.value)
    with gr.Tab("Steering", id="steering") as tab:
        gr.Markdown(INTRO)
        # simple first (a preset, one strength, "Write both", the two texts); the rest
        # under "More controls"
        with gr.Row():
            with gr.Column(scale=2):
                # value = slug; custom values let a link name a preset before the menu fills
                preset = gr.Dropdown(choices, value=None, label="Presets (for this SAE set)",
                                     allow_custom_value=True)
                preset_note = gr.Markdown(note)
                prepare = gr.Button("Prepare presets", size="sm", visible=missing)
            strength = gr.Slider(-3, 3, value=first["strength"], step=0.01, scale=3,
                                 label="Strength (x the layer's typical size)")
        with gr.Accordion("More controls", open=False):
            prompt = gr.Textbox(first["prompt"], label="Prompt", max_length=MAX_PROMPT_CHARS)
            with gr.Row():
                layer = gr.Number(first["layer"], precision=0, minimum=0, maximum=MAX_LAYER,
                                  label="Layer")
                feature = gr.Number(first["feature"], precision=0, minimum=0,
                                    maximum=MAX_FEATURE, label="Feature")
            name_md = gr.Markdown(feature_name_line(picker.value, first["layer"],
                                                    first["feature"]))
            with gr.Row():
                mode = gr.Radio([("add the direction", "add"),
                                 ("clamp the activation", "clamp")], value="add", label="Mode")
                positions = gr.Radio([("prompt and answer", "all"),
                                      ("answer only", "generated")],
                                     value="all", label="Steer at")
                extra = gr.Textbox("", label="More features (layer:feature:strength, ...)",
                                   placeholder="e.g. 11:4512:0.3", max_length=MAX_EXTRA_CHARS)
            with gr.Row():
                max_tokens = gr.Slider(1, MAX_NEW_TOKENS, value=48, step=1,
                                       label="Max new tokens")
                temperature = gr.Slider(0, 2, value=0, step=0.05,
                                        label="Temperature (0 = greedy)")
                seed = gr.Number(0, precision=0, minimum=-MAX_SEED, maximum=MAX_SEED,
                                 label="Seed")
        run = gr.Button("Write both", variant="primary")
        with gr.Row():
            plain = gr.HighlightedText(label="Without steering", color_map=DIFF_COLORS,
                                       elem_id="steer-plain",
                                       show_legend=False, show_inline_category=False,
                                       combine_adjacent=True)
            steered = gr.HighlightedText(label="With steering", color_map=DIFF_COLORS,
                                         elem_id="steer-steered",
                                         show_legend=False, show_inline_category=False,
                                         combine_adjacent=True)
        with numbers_accordion("The numbers: sizes, timing and scores"):
            notes = gr.Markdown()
            scores = score_panel()
        gr.Markdown("### Find features that steer towards a concept\n" + EXPLAIN)
        with gr.Row():
            concept = gr.Textbox(label="Concept", placeholder="ocean", scale=2,
                                 max_length=MAX_CONCEPT_CHARS)
            related = gr.Textbox(label="Related words (optional, separated by commas)",
                                 placeholder="sea, waves, beach", scale=3,
                                 max_length=MAX_RELATED_CHARS)
            first = gr.Number(n // 5, precision=0, minimum=0, maximum=MAX_LAYER,
                              label="From layer")
            last = gr.Number(n - 1, precision=0, minimum=0, maximum=MAX_LAYER,
                             label="To layer")
            search = gr.Button("Find features")
        summary = gr.Markdown()
        with gr.Row():
            found = gr.Dataframe(interactive=False, wrap=True, scale=3)
            curve = gr.Plot(label="Dose curve of the suggestion", scale=2)
        suggestion = gr.State(None)
        use = gr.Button("Use the suggestion", size="sm")
        compare = compare_panel()
        gr.Markdown("### Baselines\nDoes the feature beat simpler ways? The same prompt and "
                    "settings, steered by the *difference of means* (the average state on "
                    "sentences about the concept minus sentences about everyday things, at the "
                    "Layer above, dosed by the same rule) and by *prompting* (the concept "
                    "asked for in the prompt, no steering).")
        baselines = gr.Button("Write the baselines")
        with gr.Row():
            mean_text = gr.Textbox(label="Difference of means", lines=4)
            asked_text = gr.Textbox(label="Prompting", lines=4)
        baseline_notes = gr.Markdown()

        inputs = [picker, prompt, layer, feature, strength, mode, positions, extra, max_tokens,
                  temperature, seed]
        written = run.click(stream_steering, inputs, [plain, steered, notes], api_name="steer",
                            concurrency_limit=STEER_CONCURRENCY)
        connect_judge(run, written, scores, [prompt, concept, related, plain, steered],
                      compare, [picker, prompt, concept, related, first, last, max_tokens],
                      limit=STEER_CONCURRENCY)
        searched = [picker, concept, related, first, last]
        finder_out = [found, summary, curve, suggestion]
        search.click(find_features, searched, finder_out, api_name="find_features",
                     concurrency_limit=STEER_CONCURRENCY)
        concept.submit(find_features, searched, finder_out, concurrency_limit=STEER_CONCURRENCY)
        use.click(use_suggestion, suggestion, [layer, feature, strength, extra], queue=False)
        baselines.click(write_baselines, [picker, prompt, concept, related, layer, max_tokens,
                                          temperature, seed],
                        [mean_text, asked_text, baseline_notes], api_name="baselines",
                        concurrency_limit=STEER_CONCURRENCY)

        @friendly("choosing the feature")
        def pick(evt: gr.SelectData):
            row = evt.row_value or []
            if len(row) < 2:
                return gr.Number(), gr.Number()
            return whole(row[0], "layer", 0, MAX_LAYER), whole(row[1], "feature")

        found.select(pick, None, [layer, feature], queue=False)
        for control in (picker, layer, feature):
            control.change(feature_name_line, [picker, layer, feature], name_md, queue=False)

        # .change also fires when another event (a link) sets the slug
        preset.change(preset_controls, [picker, preset],
                      [prompt, layer, feature, strength, mode, positions, extra, max_tokens,
                       temperature, seed], queue=False)
        menu = [preset, preset_note, prepare]
        prepare.click(prepare_presets, picker, menu, queue=False)

        @friendly("switching the SAE set")
        def switch_atlas(folder):
            n = _n_layers(folder)
            return (n // 5, n - 1, None, None, *refresh_presets(folder))

        picker.change(switch_atlas, picker, [first, last, found, suggestion, *menu])
        if refreshed is not None:  # presets built since: the menu fills, the choice stays
            refreshed.change(lambda folder: refresh_presets(folder, reset=False), picker, menu,
                             queue=False)
    return SteeringTab(tab, layer, feature, strength, run, preset)
