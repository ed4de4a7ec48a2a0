"""The Steering tab's helpers and the inputs it hands to other tabs."""

import json
import math

import pytest

from tests.steer.common import PROMPT
from tests.steer.preset_helpers import CONCEPTS, planted_copy, tiny_search  # noqa: F401


def test_tab_helpers_diff_and_extra_features(tiny_atlas):
    import gradio as gr

    from ui.steering.write import diff_highlight, parse_extra, run_steering

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
                 (folder, PROMPT, 1, 5, 1.0, "add", "all", "", 500, 0, 0)):
        with pytest.raises(gr.Error):
            run_steering(*args)
    # no set yet (the first build runs): an info toast in plain words, the outputs kept
    assert run_steering("", PROMPT, 1, 5, 1.0, "add", "all", "", 8, 0, 0) == gr.skip()


def test_the_texts_stream_token_by_token_and_end_as_the_whole_answer(tiny_atlas, monkeypatch):
    """Every update is the two texts so far (each a prefix of the last), the last one equals
    the whole answer, and the edits of every step ran in the one thread that installed the
    steering hooks (else later tokens would be written unsteered)."""
    import threading
    import time

    import gradio as gr

    from sae_core.steer import generation
    from ui.serving import streaming
    from ui.steering.write import run_steering, stream_steering

    monkeypatch.setattr(streaming, "EVERY_S", 0.0)
    threads = set()
    real = generation.generate

    def watched(*args, on_tokens=None, **kwargs):
        threads.add(threading.get_ident())

        def slowly(rows):  # a tiny model outruns the page: give each token some time
            time.sleep(0.02)
            on_tokens(rows)

        return real(*args, on_tokens=slowly if on_tokens else None, **kwargs)

    monkeypatch.setattr(generation, "generate", watched)
    args = (str(tiny_atlas), PROMPT, 1, 5, 4.0, "add", "all", "", 12, 0, 0)
    updates = list(stream_steering(*args))
    streamed = set(threads)
    whole = run_steering(*args)
    text = lambda spans: "".join(t for t, _ in spans)  # noqa: E731
    assert len(updates) >= 3 and updates[-1][:2] == whole[:2]  # the notes hold the seconds
    assert updates[-1][2].split(" in one batch")[0] == whole[2].split(" in one batch")[0]
    for left, right, notes in updates[:-1]:
        assert text(whole[0]).startswith(text(left)) and text(whole[1]).startswith(text(right))
        assert "Writing" in notes
    assert len({len(text(u[1])) for u in updates}) > 2  # it grew in steps
    assert len(streamed) == 1 and threading.get_ident() not in streamed  # a thread of its own
    with pytest.raises(gr.Error, match="strength"):
        list(stream_steering(*args[:4], math.nan, *args[5:]))
    assert list(stream_steering("", *args[1:])) == [gr.skip()]


def test_the_tab_hands_out_its_feature_inputs(tiny_atlas):
    import gradio as gr

    from sae_core.atlas.layout import read_info
    from sae_core.steer.edits import MAX_STRENGTH
    from ui.steering.tab import build_steering_tab

    with gr.Blocks() as demo:
        picker = gr.Dropdown([str(tiny_atlas)], value=str(tiny_atlas))
        tab = build_steering_tab(picker)
    assert tab.tab.id == "steering"
    # what it hands out: a layer of the atlas, a feature of that layer, a strength in range
    layers = [int(h.split(".")[1]) for h in list(read_info(tiny_atlas).hookpoints)]
    d_sae = json.loads((tiny_atlas / "layers.0" / "cfg.json").read_text())["d_sae"]
    assert tab.layer.value in layers and 0 <= tab.feature.value < d_sae
    assert -MAX_STRENGTH <= tab.strength.value <= MAX_STRENGTH
    # where they go: the one "Write both" event reads them with the picker
    steer = next(fn for fn in demo.fns.values() if fn.api_name == "steer")
    assert steer.inputs[0] is picker
    assert [steer.inputs[i] for i in (2, 3, 4)] == [tab.layer, tab.feature, tab.strength]


@pytest.mark.usefixtures("tiny_search")
def test_the_preset_menu_comes_from_the_active_atlas(tiny_atlas, loaded, tmp_path, monkeypatch):
    import gradio as gr

    from sae_core.steer.presets import ensure_presets
    from ui.steering.presets import MISSING, preset_choices, preset_controls, refresh_presets
    from ui.steering.tab import build_steering_tab

    planted, path = planted_copy(tiny_atlas, loaded.lm, tmp_path)
    monkeypatch.setattr("sae_core.steer.presets.CONCEPTS_FILE", path)  # the app's concept list
    resolved = ensure_presets(planted.folder, planted)
    folder = str(planted.folder)
    choices, note, missing = preset_choices(folder)
    assert choices == [(p.name, p.slug) for p in resolved.presets] and not missing
    assert ("All roads lead to Paris", "paris") in choices
    assert "A word it cannot write" in note  # failed: left out, named
    assert all(f.concept.name in note for f in resolved.failed)
    paris = resolved.get("paris")
    assert preset_controls(folder, "paris") == [
        CONCEPTS[0]["prompt"], paris.layer, paris.feature, paris.strength, "clamp", "all",
        paris.extra, 8, 0.0, 0]
    with pytest.warns(UserWarning, match="no preset 'never'"):  # left out: no change
        assert preset_controls(folder, "never") == [gr.update()] * 10
    assert preset_controls(folder, None) == [gr.update()] * 10
    # an SAE set without presets says so, and offers to prepare them
    assert preset_choices(str(tiny_atlas)) == ([], MISSING, True)
    menu, note, button = refresh_presets(str(tiny_atlas))
    assert menu.choices == [] and note == MISSING and button.visible
    with gr.Blocks() as demo:
        picker = gr.Dropdown([folder, str(tiny_atlas)], value=folder)
        tab = build_steering_tab(picker)
    assert [tuple(c) for c in tab.preset.choices] == choices and tab.preset.value is None
    assert (tab.layer.value, tab.feature.value) == (paris.layer, paris.feature)
    # choosing a slug (by hand or set by a link) loads the preset into the controls
    (dep,) = [d for d in demo.fns.values() if (tab.preset._id, "change") in d.targets]
    assert [b._id for b in dep.inputs] == [picker._id, tab.preset._id]
    assert {tab.layer._id, tab.feature._id, tab.strength._id} <= {b._id for b in dep.outputs}
