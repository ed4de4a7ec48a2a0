"""The Steering tab's helpers and the inputs it hands to other tabs."""

import math

import pytest

from tests.steer.common import PROMPT


def test_tab_helpers_diff_and_extra_features(tiny_atlas):
    import gradio as gr

    from ui.steering import diff_highlight, parse_extra, run_steering

    left, right = diff_highlight("the cat sat on the mat", "the dog sat on a mat")
    assert "".join(t for t, _ in left) == "the cat sat on the mat"
    assert [t for t, c in left if c] == ["cat", "the"]
    assert [t for t, c in right if c] == ["dog", "a"]
    assert parse_extra(" 13:90:0.5, 2:7:-1.5 ") == [(13, 90, 0.5), (2, 7, -1.5)]
    with pytest.raises(ValueError, match="layer:feature:strength"):
        parse_extra("13:90")
    folder = str(tiny_atlas)
    plain, _, notes = run_steering(folder, PROMPT, 1, 5, 1.0, "add", "all", "2:7:0.5", 8, 0, 0)
    assert plain and "layer 1 feature 5" in notes and "layer 2 feature 7" in notes
    for args in ((folder, PROMPT, 1, 5, math.nan, "add", "all", "", 8, 0, 0),
                 (folder, PROMPT, 1.5, 5, 1.0, "add", "all", "", 8, 0, 0),
                 ("", PROMPT, 1, 5, 1.0, "add", "all", "", 8, 0, 0),
                 (folder, PROMPT, 1, 5, 1.0, "add", "all", "", 500, 0, 0)):
        with pytest.raises(gr.Error):
            run_steering(*args)


def test_the_tab_hands_out_its_feature_inputs(tiny_atlas):
    import gradio as gr

    from ui.steering import build_steering_tab

    with gr.Blocks():
        picker = gr.Dropdown([str(tiny_atlas)], value=str(tiny_atlas))
        tab = build_steering_tab(picker)
    assert isinstance(tab.layer, gr.Number) and isinstance(tab.feature, gr.Number)
    assert isinstance(tab.strength, gr.Slider) and tab.tab.id == "steering"
