"""The Tour tab's example on the tiny atlas: the features it shows are the live view's."""

from types import SimpleNamespace

import gradio as gr
import pytest

from sae_core.explore.feature_index import ensure_feature_index
from sae_core.explore.feature_page import Snippet
from sae_core.explore.live import live_view
from tests.browser import browser_page, needs_chromium
from tests.ui.planted_app import planted_app
from ui.serving import session
from ui.tour import tab as tour
from ui.tour import text as tour_text


@pytest.fixture(scope="module")
def indexed(tiny_atlas):
    loaded = session.open_atlas(tiny_atlas)
    ensure_feature_index(tiny_atlas, lm=loaded.lm)
    return loaded


def test_depths_spread_over_the_model():
    hooks = [f"layers.{i}" for i in range(30)]
    assert tour.tour_hookpoints(hooks) == ["layers.3", "layers.11", "layers.18", "layers.26"]
    assert tour.tour_hookpoints(["layers.2", "layers.0", "layers.1"]) == [
        "layers.0", "layers.1", "layers.2"]
    assert tour.tour_hookpoints(["layers.5"]) == ["layers.5"]


def test_example_features_are_the_live_views(indexed):
    view, t, found = tour.example_features(indexed)
    assert view.pieces[t].strip() == tour.WORD
    direct = live_view(indexed, tour.SENTENCE)
    ids_TL, acts_TL = direct.strongest()
    assert [d.layer for d in found] == [0, 1, 2]
    for j, d in enumerate(found):
        assert d.feature == int(ids_TL[t, j]) and d.activation == pytest.approx(
            float(acts_TL[t, j]))
        if d.feature >= 0:  # the page is the feature's, from the index
            assert d.page is not None and d.page.feature == d.feature
            assert d.page.hookpoint == f"layers.{d.layer}"
    assert any(d.feature >= 0 for d in found)


def test_run_example_says_it_in_words(indexed):
    words, numbers, notes, slug = tour.run_example(None, str(indexed.folder))
    assert "**The word we follow:** “Paris”" in words
    *_, found = tour.example_features(indexed)
    for d in found:
        assert f"layer {d.layer} of 3" in words
        if d.feature >= 0:
            assert f"?layer={d.layer}&feature={d.feature}" in words
            assert f"| {d.layer} | {d.feature} | {d.activation:.2f} |" in numbers
    # Without the Steering tab's preset menu there is nothing to load: said plainly.
    assert slug is None and notes == tour_text.NO_PRESET


def test_missing_pieces_are_plain_messages(tmp_path):
    words, *_ = tour.run_example(None, None)
    assert "will appear here once there is an SAE set" in words
    words, *_ = tour.run_example(gr.Dropdown(), str(tmp_path))
    assert "could not run" in words
    no_index = tour_text.DepthFeature(layer=2, feature=7, activation=1.5, page=None)
    none = tour_text.DepthFeature(layer=0, feature=-1, activation=0.0, page=None)
    md = tour_text.words_markdown("a text", "a", [none, no_index], n_layers=3)
    assert tour_text.NO_FEATURE in md and tour_text.NO_INDEX in md
    table = tour_text.numbers_markdown("a", [none, no_index])
    assert "| 0 | none |" in table and "| 2 | 7 | 1.50 | no index |" in table


def test_no_preset_skips_the_steering_part(indexed):
    *_, notes, slug, menu = tour.run_example(gr.Dropdown(), str(indexed.folder))
    assert notes == tour_text.NO_PRESET and slug is None and menu == gr.skip()
    assert list(tour.steer_preset(str(indexed.folder), None)) == [(gr.skip(),) * 3]


def test_the_preset_streams_and_a_failing_run_is_a_message(monkeypatch):
    presets = SimpleNamespace(get=lambda slug: "the ocean preset" if slug == "ocean" else None)
    monkeypatch.setattr(tour, "read_presets", lambda folder: presets)
    monkeypatch.setattr(tour, "controls_of", lambda preset: [preset])
    assert list(tour.steer_preset("atlas", "jazz")) == [(None, None, tour_text.NO_PRESET)]

    def fails(folder, *controls):
        yield [("a", None)], [("b", None)], "*Writing both texts...*"
        raise gr.Error("layer 11 is not in this SAE set")

    monkeypatch.setattr(tour, "stream_steering", fails)
    *_, (plain, steered, notes) = tour.steer_preset("atlas", "ocean")
    assert plain is None and steered is None and "layer 11 is not in this SAE set" in notes
    calls = []

    def writes(folder, *controls):  # two streamed updates, then the whole texts
        calls.append((folder, controls))
        yield [("a", None)], [("b", None)], "*Writing both texts...*"
        yield [("a c", None)], [("b", "x")], "*Writing both texts...*"
        yield [("a c", None)], [("b", "x")], "done"

    monkeypatch.setattr(tour, "stream_steering", writes)
    updates = list(tour.steer_preset("atlas", "ocean"))
    assert calls == [("atlas", ("the ocean preset",))] and len(updates) == 3
    assert [t["token"] for t in updates[0][0].value] == ["a"]  # text before the end
    plain, steered, notes = updates[-1]
    assert [t["token"] for t in plain.value] == ["a c"]
    assert [t["token"] for t in steered.value] == ["b"]
    assert plain.visible and notes.endswith("done")


def test_snippets_are_escaped_and_the_peak_is_bold():
    s = Snippet(pieces=("the", " *cat", " [sat](x)", " on"), acts=(0, 1, 3, 0), peak=2,
                value=3.0, window=0, position=5)
    line = tour_text.snippet_line(s)
    assert line == r"…the \*cat **\[sat\]\(x\)** on…"


@needs_chromium
def test_one_click_runs_the_whole_example(loaded, tiny_atlas, tmp_path):
    """In a browser: the button fills the words, loads the first preset into the Steering
    tab and shows its side by side in the tour."""
    with planted_app(tiny_atlas, loaded.lm, tmp_path) as (url, presets), \
            browser_page(url) as page:
        first = presets.presets[0]
        page.get_by_role("button", name="Run the example").click(timeout=30_000)
        page.get_by_text("The word we follow").first.wait_for(timeout=60_000)
        page.get_by_text("Steering: push one idea").first.wait_for(timeout=60_000)
        # the tab's own run writes what the preset's greedy check wrote
        page.wait_for_function(
            "t => (document.querySelector('#tour-steered')?.innerText || '')"
            ".replace(/\\s/g, '').includes(t)", arg="".join(first.steered_text.split()),
            timeout=60_000)
        page.get_by_role("tab", name="Steering").click()
        page.get_by_text("More controls").first.click()  # the tab opens simple
        feature = page.get_by_label("Feature", exact=True).locator("visible=true").first
        assert feature.input_value() == str(first.feature)
