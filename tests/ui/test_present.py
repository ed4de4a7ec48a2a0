"""Presenter mode: every tab's numbers sit in an accordion, which `?mode=present` closes
on page load and any other link leaves open."""

from types import SimpleNamespace

import gradio as gr

from ui.shared.present import is_present, numbers_accordion, numbers_accordions, wire_present_mode


def test_the_query_string_asks_for_presenter_mode_or_not():
    assert is_present({"mode": "present"}) and is_present({"mode": " Present "})
    assert not is_present({}) and not is_present({"mode": "presenter"})
    assert not is_present({"mode": "present" * 100})  # long values are cut, not matched


def test_load_closes_the_numbers_accordions_only_in_presenter_mode():
    with gr.Blocks() as demo:
        with numbers_accordion():
            gr.Markdown("1.93%")
        with gr.Accordion("other"):
            gr.Markdown("kept as it is")
        with numbers_accordion("The numbers, layer by layer"):
            gr.Markdown("0.80")
        accordions = wire_present_mode(demo)
    assert accordions == numbers_accordions(demo) and len(accordions) == 2
    load = next(fn for fn in demo.fns.values() if fn.outputs == accordions).fn
    closed = load(SimpleNamespace(query_params={"mode": "present", "tab": "steering"}))
    assert [(isinstance(u, gr.Accordion), u.open) for u in closed] == [(True, False)] * 2
    kept = load(SimpleNamespace(query_params={"tab": "steering"}))
    assert not any(isinstance(u, gr.Accordion) for u in kept)  # gr.skip(): as built


def test_every_tab_of_the_app_folds_its_numbers(tiny_atlas):
    import app

    demo = app.build_app(tiny_atlas)
    labels = [a.label for a in numbers_accordions(demo)]
    # layer map, features, SAEs, steering, live view
    assert len(labels) == 5, labels
