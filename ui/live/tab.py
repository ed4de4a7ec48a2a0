"""The Live view tab: the features of every token of a text, at every layer, as you type."""

from __future__ import annotations

from typing import NamedTuple

import gradio as gr
import pandas as pd

from sae_core.errors import BadInput, check_whole
from sae_core.explore.layermap import read_layer_map
from sae_core.explore.live import live_view
from sae_core.explore.names import readable_names

from ..serving import builds, session
from ..serving.errors import friendly, text_arg
from ..shared.choice import HINT
from ..shared.present import numbers_accordion
from .view import heatmap, token_choices, token_table

EXAMPLE = ("Marie Curie moved to Paris in 1891. She won two Nobel prizes, and her notebooks "
           "are still radioactive today! 🙂")
MAX_TEXT_CHARS = 10_000
"""Longest text the Live view reads (it shows the first 256 tokens)."""
LIVE_INTRO = """Type or paste text: every row is a token, every column a layer, and each cell
the feature that fires most strongly there (hover for its id and label). Grey cells are
tokens with a *massive activation* (the first token, and a few others): the SAEs were not
trained on them. Pick a token below to see its strongest features at every layer; click a
row of any table to choose that feature."""


class LiveTab(NamedTuple):
    table: gr.Dataframe
    """The chosen token's features; a click on a row chooses that feature."""
    chosen_md: gr.Markdown
    """Says which feature is chosen."""


def open_loaded(folder: str):
    """The atlas of the picker, or a message for the visitor."""
    folder = builds.need_set(folder, "The features of every token of your text")
    try:
        return session.open_atlas(folder)
    except (OSError, ValueError) as err:
        raise gr.Error(f"Could not open the SAE set: {err}") from err


def notices_md(view) -> str:
    return "\n".join(f"*{n}*" for n in view.notices)


@friendly("reading the text")
def run_live(folder: str, text: str):
    """(heatmap, notice, token picker, token table, view) for the text."""
    loaded = open_loaded(folder)
    view = live_view(loaded, text_arg(text, "The text", MAX_TEXT_CHARS))
    lmap, names = read_layer_map(folder), readable_names(folder)
    choices = token_choices(view)
    first = next((i for i in range(view.n_tokens) if not view.flagged_TL[i].all()), 0)
    return (heatmap(view, lmap, names), notices_md(view),
            gr.Dropdown(choices=choices, value=first),
            token_table(view, first, lmap, names=names), view)


@friendly("showing the token's features")
def pick_token(folder: str, view, token):
    if view is None or token is None:
        return pd.DataFrame()
    try:
        t = check_whole(token, "token", 0, from_text=True)  # the upper end: token_table
    except BadInput:
        raise gr.Error(f"Pick a token from the list, not {str(token)[:20]!r}.") from None
    folder = open_loaded(folder).folder
    return token_table(view, t, read_layer_map(folder), names=readable_names(folder))


def build_live_tab(picker: gr.Dropdown) -> LiveTab:
    """`picker` holds the active atlas folder."""
    with gr.Tab("Live view", id="live-view") as tab:
        gr.Markdown(LIVE_INTRO)
        text = gr.Textbox(EXAMPLE, lines=3, max_length=MAX_TEXT_CHARS,
                          label="Text (up to 256 tokens are shown)")
        notice = gr.Markdown()
        plot = gr.Plot()
        with gr.Row():
            token = gr.Dropdown([], label="Token", scale=1)
            chosen_md = gr.Markdown(HINT)
        with numbers_accordion():
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
    return LiveTab(table, chosen_md)
