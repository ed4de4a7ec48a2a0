"""Presenter mode: `?mode=present` closes every "The numbers" accordion on page load, so a
talk shows plain words and pictures first, with the precise numbers one click away.

Tabs put their tables of numbers inside `numbers_accordion()` (open by default); the app
calls `wire_present_mode` once every tab is built: it finds those accordions in the Blocks
and, on load, closes them when the page's query string asks for presenter mode.
"""

from __future__ import annotations

from collections.abc import Mapping

import gradio as gr

NUMBERS_CLASS = "numbers"
PRESENT = "present"


def numbers_accordion(label: str = "The numbers") -> gr.Accordion:
    """An accordion for a tab's numbers: open, closed in presenter mode."""
    return gr.Accordion(label, open=True, elem_classes=[NUMBERS_CLASS])


def numbers_accordions(demo: gr.Blocks) -> list[gr.Accordion]:
    """The Blocks' accordions made by `numbers_accordion`, in the order they were built."""
    return [b for b in demo.blocks.values() if isinstance(b, gr.Accordion)
            and NUMBERS_CLASS in (b.elem_classes or [])]


def is_present(query: Mapping[str, str]) -> bool:
    """Whether the query string asks for presenter mode (`mode=present`, any case)."""
    return str(query.get("mode", ""))[:16].strip().lower() == PRESENT


def wire_present_mode(demo: gr.Blocks) -> list[gr.Accordion]:
    """On page load, close the numbers accordions when the link says `?mode=present`;
    returns them."""
    accordions = numbers_accordions(demo)
    if not accordions:
        return accordions

    def on_load(request: gr.Request):
        closed = is_present(dict(request.query_params) if request else {})
        updates = [gr.Accordion(open=False) if closed else gr.skip() for _ in accordions]
        return updates if len(updates) > 1 else updates[0]

    demo.load(on_load, None, accordions, queue=False, api_visibility="private")
    return accordions
