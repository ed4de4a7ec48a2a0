"""The feature a visitor chose by clicking a table row in the Live view or Search tab; the
Features tab follows it (`ui.features.tab.connect_features`)."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from .sites import as_key

HINT = "Click a table row to choose a feature."


def choose(table: pd.DataFrame, evt: gr.SelectData):
    """(layer key, feature) of the clicked row, and a line saying so for each tab; the first
    two columns of every table are layer (its key, ui/shared/sites.py) and feature."""
    row = evt.row_value if evt.row_value is not None else table.iloc[evt.index[0]].tolist()
    try:
        chosen = (as_key(row[0]), int(row[1]))
    except (TypeError, ValueError, IndexError):
        return gr.skip(), gr.skip(), gr.skip()  # a row with no feature (massive activation)
    md = f"Chosen: **layer {chosen[0]}, feature {chosen[1]}**"
    return chosen, md, md


def wire_choices(chosen: gr.State, tables: list[gr.Dataframe],
                 notes: tuple[gr.Markdown, gr.Markdown]) -> None:
    """A click on a row of any of `tables` sets `chosen` and both `notes`."""
    for table in tables:
        table.select(choose, table, [chosen, *notes])
