"""The Steering tab's finder panel and baselines on the tiny atlas with a planted feature."""

import gradio as gr
import pytest

from tests.steer.preset_helpers import (  # noqa: F401 (tiny_search: a fixture)
    FEATURE,
    HOOK,
    planted_copy,
    tiny_search,
)
from ui.steering.finder import COLUMNS, find_features, use_suggestion, write_baselines
from ui.steering.write import parse_extra


@pytest.mark.usefixtures("tiny_search")
def test_find_use_and_compare(tiny_atlas, loaded, tmp_path):
    planted, _ = planted_copy(tiny_atlas, loaded.lm, tmp_path)
    folder = str(planted.folder)
    table, summary, fig, suggestion = find_features(folder, "Paris", "", 0, 2)
    assert list(table.columns) == COLUMNS and len(table) >= 2
    assert (2, FEATURE) in set(zip(table["layer"], table["feature"], strict=True))
    assert table["reach %"].is_monotonic_decreasing
    assert "Paris" in summary or "Suggested" in summary
    if suggestion is None:  # nothing stayed fluent: said so, nothing to use
        assert "No candidate" in summary and fig is None
    else:
        layer, feature, strength, extra = use_suggestion(suggestion)
        assert [layer, feature] == suggestion["features"][0]
        more = parse_extra(extra)
        assert [[lay, feat] for lay, feat, _ in more] == suggestion["features"][1:]
        s = suggestion["strength"] * suggestion["share"]
        assert all(x == pytest.approx(s, abs=1e-3) for x in [strength, *(m[2] for m in more)])
        xs = list(fig.data[0].x)
        assert len(fig.data) == 2 and xs == sorted(xs)
    updates = list(write_baselines(folder, "the cat sat on the", "Paris", "", 2, 6, 0.0, 0))
    mean_text, asked_text, notes = updates[-1]
    assert isinstance(mean_text, str) and isinstance(asked_text, str)
    assert "Difference of means at layer 2" in notes and "Paris" in notes
    # streamed: every update before the last is a prefix of the whole texts
    for mean_part, asked_part, note in updates[:-1]:
        assert mean_text.startswith(mean_part) and asked_text.startswith(asked_part)
        assert note == "*Writing the baselines...*"


@pytest.mark.usefixtures("tiny_search")
def test_bad_input_is_a_clear_error(tiny_atlas):
    folder = str(tiny_atlas)
    for args, match in (((folder, "", "", 0, 2), "type a word"),
                        ((folder, "Paris", "", "x", 2), "two whole numbers"),
                        ((folder, "Paris", "", 5, 9), "no layer")):
        with pytest.raises(gr.Error, match=match):
            find_features(*args)
    assert find_features("", "Paris", "", 0, 2) == gr.skip()  # no set yet: no error
    with pytest.raises(gr.Error, match="Find features"):
        use_suggestion(None)
    with pytest.raises(gr.Error, match="not in this SAE set"):
        list(write_baselines(folder, "the cat", "Paris", "", 7, 6, 0.0, 0))
    with pytest.raises(gr.Error, match="type a prompt"):
        list(write_baselines(folder, "  ", "Paris", "", 1, 6, 0.0, 0))
