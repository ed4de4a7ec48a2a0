"""The Tour tab: what a sparse autoencoder is, in plain words, and one example that runs
with one click: a sentence, the strongest feature on one word at a few depths with the
passages where it fires most, and a steering preset written side by side."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import NamedTuple

import gradio as gr

from sae_core.activations import SITES, layer_of, parse_hookpoint
from sae_core.atlas.layout import LoadedAtlas
from sae_core.explore.feature_index import has_feature_index
from sae_core.explore.feature_page import feature_page
from sae_core.explore.live import LiveView, live_view
from sae_core.steer.presets import read_presets

from ..serving import builds, session
from ..serving.errors import friendly
from ..steering.presets import controls_of
from ..steering.tab import STEER_CONCURRENCY, SteeringTab
from ..steering.write import DIFF_COLORS, stream_steering
from .text import (
    INTRO,
    NO_PRESET,
    STEER_INTRO,
    DepthFeature,
    numbers_markdown,
    words_markdown,
)

SENTENCE = "Marie Curie moved to Paris in 1891 to study physics and chemistry."
WORD = "Paris"
N_DEPTHS = 4
"""Layers shown, spread from early to late."""


class TourTab(NamedTuple):
    """The parts `connect_tour` wires to the Steering tab."""

    tab: gr.Tab
    run: gr.Button
    words: gr.Markdown
    """The example in plain words."""
    numbers: gr.Markdown
    """The same with numbers (inside an accordion)."""
    plain: gr.HighlightedText
    steered: gr.HighlightedText
    steer_notes: gr.Markdown
    preset: gr.State
    """The slug of the preset the example steers with (None: no preset)."""


def tour_hookpoints(hookpoints: list[str], n: int = N_DEPTHS) -> list[str]:
    """`n` hookpoints of one site (the residual stream if the set reads it, else the MLP,
    then the attention output) spread over the model from early to late (all of them if
    fewer): the example follows one stream through the depths."""
    sites = {parse_hookpoint(h)[1] or "resid" for h in hookpoints}
    site = next(s for s in SITES if s in sites)
    ordered = sorted((h for h in hookpoints if (parse_hookpoint(h)[1] or "resid") == site),
                     key=layer_of)
    k = len(ordered)
    return [ordered[i] for i in sorted({(2 * j + 1) * k // (2 * n) for j in range(n)})]


def word_index(view: LiveView, word: str) -> int:
    """The token of `word`: the first token that is the word, else the first that holds it,
    else the last token."""
    pieces = [p.strip() for p in view.pieces]
    for match in (lambda p: p == word, lambda p: word in p, lambda p: p and p in word):
        hits = [i for i, p in enumerate(pieces) if match(p)]
        if hits:
            return hits[0]
    return view.n_tokens - 1


def example_features(loaded: LoadedAtlas, sentence: str = SENTENCE, word: str = WORD,
                     n: int = N_DEPTHS) -> tuple[LiveView, int, list[DepthFeature]]:
    """(live view of the sentence, index of the word's token, its strongest feature at `n`
    layers spread over the atlas, with each feature's page when the atlas has an index)."""
    view = live_view(loaded, sentence)
    t = word_index(view, word)
    ids_TL, acts_TL = view.strongest()
    indexed = has_feature_index(Path(loaded.folder))
    out = []
    for h in tour_hookpoints(list(view.hookpoints), n):
        j = view.hookpoints.index(h)
        f, act = int(ids_TL[t, j]), float(acts_TL[t, j])
        page = feature_page(loaded, h, f) if indexed and f >= 0 else None
        out.append(DepthFeature(layer_of(h), f, act, page, h))
    return view, t, out


def first_preset(folder: str | None) -> str | None:
    """The slug of the atlas's first preset that steers visibly (presets are resolved per
    atlas: sae_core.steer.presets), None when it has none yet."""
    found = read_presets(folder) if folder else None
    return found.presets[0].slug if found and found.presets else None


@friendly("running the example")
def run_example(preset: gr.Dropdown | None, folder: str | None) -> tuple:
    """(words, numbers, steering notes, preset slug for the State[, for the Steering tab's
    preset dropdown]) of the example on the active atlas; a plain message, never a crash."""
    skip = (gr.skip(),) if preset is not None else ()
    if not folder:
        return (f"*{builds.waiting_text('The example')}*", "", "", None, *skip)
    try:
        loaded = session.open_atlas(folder)
        view, t, found = example_features(loaded)
    except (OSError, ValueError) as err:
        return (f"*The example could not run on this SAE set: {err}*", "", "", None, *skip)
    n_layers = 1 + max(layer_of(h) for h in loaded.hookpoints)
    word = view.pieces[t].strip()
    slug = first_preset(folder) if preset is not None else None  # no menu: no preset
    notes = STEER_INTRO if slug else NO_PRESET
    out = (words_markdown(view.text, word, found, n_layers),
           numbers_markdown(word, found), notes, slug)
    return out + ((slug,) if slug else skip)


@friendly("writing the preset")
def steer_preset(folder: str | None, slug: str | None):
    """(without, with, notes), streamed: the tour's preset written side by side by the
    Steering tab's own streaming function, the two texts growing token by token; a plain
    message when it cannot run, nothing when there is no preset."""
    if not slug:
        yield gr.skip(), gr.skip(), gr.skip()
        return
    found = read_presets(folder) if folder else None
    preset = found.get(slug) if found else None
    if preset is None:
        yield None, None, NO_PRESET
        return
    try:
        for left, right, notes in stream_steering(folder, *controls_of(preset)):
            yield (gr.HighlightedText(left, visible=True),
                   gr.HighlightedText(right, visible=True), f"{STEER_INTRO}\n\n{notes}")
    except gr.Error as err:
        yield None, None, f"*The preset could not run on this SAE set: {err.message}*"


def connect_tour(tour: TourTab, picker: gr.Dropdown, steering: SteeringTab) -> None:
    """One click runs the example: the word's features here, then the first preset chosen in
    the Steering tab's menu (which loads its controls there) and written side by side in the
    tour. Call once the Steering tab exists."""
    outputs = [tour.words, tour.numbers, tour.steer_notes, tour.preset, steering.preset]
    tour.run.click(partial(run_example, steering.preset), picker, outputs,
                   api_visibility="private").then(
        steer_preset, [picker, tour.preset], [tour.plain, tour.steered, tour.steer_notes],
        api_visibility="private", concurrency_limit=STEER_CONCURRENCY,
        concurrency_id="tour_steer")


def build_tour_tab(picker: gr.Dropdown) -> TourTab:
    """`picker` holds the active atlas folder. Build it first (the first tab); wire the
    steering part with `connect_tour` once the Steering tab exists."""
    with gr.Tab("Tour", id="tour") as tab:
        gr.Markdown(INTRO)
        run = gr.Button("Run the example", variant="primary")
        words = gr.Markdown()
        with gr.Accordion("The numbers behind it", open=False):
            numbers = gr.Markdown()
        steer_notes = gr.Markdown()
        with gr.Row():
            # shown once a preset was written (an SAE set may have none)
            plain = gr.HighlightedText(label="Without steering", color_map=DIFF_COLORS,
                                       show_legend=False,
                                       show_inline_category=False, combine_adjacent=True,
                                       visible=False, elem_id="tour-plain")
            steered = gr.HighlightedText(label="With steering", color_map=DIFF_COLORS,
                                         show_legend=False,
                                         show_inline_category=False, combine_adjacent=True,
                                         visible=False, elem_id="tour-steered")
        preset = gr.State(None)
    return TourTab(tab, run, words, numbers, plain, steered, steer_notes, preset)
