"""Deep links: the query string parsed (table-driven), checked against an atlas, and the
app's tabs named so that every link target exists."""

import re

import gradio as gr
import pytest

import app
from tests.browser import browser_page, needs_chromium
from tests.ui.planted_app import planted_app
from ui.serving.links import TAB_IDS, Link, atlas_layers, check_link, follow_link, parse_link

# (query parameters, expected fields, number of problems)
PARSE_TABLE = [
    ({}, {}, 0),
    ({"layer": "11", "feature": "694"}, {"layer": 11, "feature": 694, "target": "features"}, 0),
    ({"layer": " 3 ", "feature": "0"}, {"layer": 3, "feature": 0, "target": "features"}, 0),
    ({"tab": "steering", "preset": "ocean"}, {"preset": "ocean", "target": "steering"}, 0),
    ({"preset": "Ocean"}, {"preset": "ocean", "target": "steering"}, 0),
    ({"tab": "Layer_Map"}, {"tab": "layer-map", "target": "layer-map"}, 0),
    ({"tab": "steering", "layer": "2", "feature": "5", "strength": "0.4"},
     {"layer": 2, "feature": 5, "strength": 0.4, "target": "steering"}, 0),
    ({"layer": "11"}, {"layer": None, "feature": None, "target": None}, 1),
    ({"feature": "694"}, {"layer": None, "feature": None, "target": None}, 1),
    ({"layer": "eleven", "feature": "694"}, {"layer": None, "feature": None, "target": None}, 1),
    ({"layer": "-1", "feature": "3"}, {"layer": None, "target": None}, 1),
    ({"layer": "1.5", "feature": "3"}, {"layer": None, "target": None}, 1),
    # numbers read as every form reads them (errors.check_number): "1e3" is 1000
    ({"layer": "1", "feature": "1e3"}, {"feature": 1000, "target": "features"}, 0),
    ({"layer": "1", "feature": "0x10"}, {"feature": None, "target": None}, 1),
    ({"layer": "1", "feature": "2.5"}, {"feature": None, "target": None}, 1),
    ({"layer": "1", "feature": "9999999999"}, {"feature": None, "target": None}, 1),
    ({"tab": "nowhere"}, {"tab": None, "target": None}, 1),
    ({"tab": "<script>"}, {"tab": None, "target": None}, 1),
    ({"preset": "ocean blue"}, {"preset": None, "target": None}, 1),
    ({"preset": "x" * 65}, {"preset": None, "target": None}, 1),
    ({"strength": "nan"}, {"strength": None, "target": None}, 1),
    ({"strength": "100"}, {"strength": None, "target": None}, 1),
    ({"strength": "-0.5"}, {"strength": -0.5, "target": "steering"}, 0),
    ({"tab": "features", "layer": "x", "feature": "1"}, {"target": "features", "layer": None}, 1),
    ({"utm_source": "mail", "__theme": "dark"}, {"target": None}, 0),
    ({"layer": ["1", "2"], "feature": ["5"]}, {"layer": 2, "feature": 5}, 0),
]


@pytest.mark.parametrize(("params", "fields", "n_problems"), PARSE_TABLE)
def test_parse_link(params, fields, n_problems):
    link = parse_link(params)
    for name, value in fields.items():
        assert getattr(link, name) == value, name
    assert len(link.problems) == n_problems, link.problems
    assert bool(link.message) == bool(n_problems)


def test_messages_quote_no_markup():
    link = parse_link({"tab": "[x](http://evil)<b>", "layer": "<img src=x>", "feature": "1"})
    assert len(link.problems) == 2
    for problem in link.problems:
        assert not set("[]()<>") & set(problem), problem


LAYERS = {0: 64, 1: 64, 2: 32}
CHECK_TABLE = [
    (Link(layer=1, feature=63), {"layer": 1, "feature": 63, "target": "features"}, 0),
    (Link(layer=2, feature=32), {"layer": None, "feature": None, "target": None}, 1),
    (Link(layer=7, feature=0), {"layer": None, "target": None}, 1),
    (Link(tab="steering", layer=7, feature=0), {"layer": None, "target": "steering"}, 1),
    (Link(preset="ocean"), {"preset": "ocean", "target": "steering"}, 0),
    (Link(preset="jazz"), {"preset": None, "target": None}, 1),
    (Link(tab="steering", preset="jazz"), {"preset": None, "target": "steering"}, 1),
    (Link(tab="live-view", problems=("earlier",)), {"target": "live-view"}, 1),
]


@pytest.mark.parametrize(("link", "fields", "n_problems"), CHECK_TABLE)
def test_check_link(link, fields, n_problems):
    checked = check_link(link, LAYERS, ["ocean", "space"])
    for name, value in fields.items():
        assert getattr(checked, name) == value, name
    assert len(checked.problems) == n_problems


def test_presets_not_prepared_yet_are_said_so():
    checked = check_link(Link(preset="ocean"), LAYERS, None)
    assert checked.preset is None and checked.target is None
    assert "not prepared yet" in checked.message


def test_follow_link_sets_only_its_target():
    skip = gr.skip()
    to_page = follow_link(Link(layer=1, feature=5), preset=True)
    assert to_page[0].selected == "features" and to_page[1:3] == (1, 5)
    assert to_page[3:6] == (skip, skip, skip) and to_page[7] == skip
    assert to_page[6].visible is False
    to_steer = follow_link(Link(tab="steering", layer=2, feature=7, strength=0.3,
                                preset="ocean"), preset=True)
    assert to_steer[1:3] == (skip, skip) and to_steer[3:6] == (2, 7, 0.3)
    assert to_steer[7] == "ocean"
    bad = follow_link(check_link(parse_link({"layer": "9", "feature": "1"}), LAYERS, []),
                      preset=False)
    assert bad[0] == skip and len(bad) == 7
    assert bad[6].visible is True and "no layer 9" in bad[6].value


def test_atlas_layers_reads_the_files(tiny_atlas, tmp_path):
    assert atlas_layers(tiny_atlas) == {0: 64, 1: 64, 2: 64}
    assert atlas_layers(tmp_path) == {} and atlas_layers(None) == {}


def test_every_tab_has_a_known_id(tiny_atlas):
    demo = app.build_app(tiny_atlas)
    tabs = [b for b in demo.blocks.values() if isinstance(b, gr.Tabs)]
    assert len(tabs) == 1
    ids = [t.id for t in tabs[0].children if isinstance(t, gr.Tab)]
    assert ids[0] == "tour" and sorted(ids) == sorted(TAB_IDS)


@needs_chromium
def test_links_open_in_a_browser(loaded, tiny_atlas, tmp_path):
    """A feature link opens its page, a preset link loads the preset, a bad link says why
    and opens the default view; the copy button shows the link of the current feature."""
    with planted_app(tiny_atlas, loaded.lm, tmp_path) as (url, presets):
        with browser_page(f"{url}/?layer=2&feature=7") as page:
            page.locator("h3", has_text=re.compile(r"Layer 2, feature 7$")).first.wait_for(
                timeout=60_000)
            assert page.get_by_role("tab", selected=True).text_content() == "Features"
            page.get_by_role("button", name="Copy a link to this feature").click()
            box = page.get_by_label("Link").locator("visible=true").first
            page.wait_for_function("b => b.value !== ''", arg=box.element_handle())
            assert box.input_value() == f"{url}/?layer=2&feature=7"
        cat = presets.get("cat")
        with browser_page(f"{url}/?tab=steering&preset=cat") as page:
            page.get_by_text("More controls").first.click()  # the tab opens simple
            feature = page.get_by_label("Feature", exact=True).locator("visible=true").first
            page.wait_for_function("([b, f]) => b.value === f",
                                   arg=[feature.element_handle(), str(cat.feature)],
                                   timeout=60_000)
            prompt = page.get_by_label("Prompt", exact=True).locator("visible=true").first
            assert prompt.input_value() == cat.concept.prompt
        with browser_page(f"{url}/?layer=9&feature=1&tab=nowhere") as page:
            page.get_by_text("could not be followed").first.wait_for(timeout=60_000)
            assert page.get_by_text("no layer 9").count() == 1
            assert page.get_by_role("tab", selected=True).text_content() == "Tour"
