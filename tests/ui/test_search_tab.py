"""The Search tab's messages: no feature index, how many features a label search found."""

import pytest

from sae_core.explore.layermap import read_layer_map
from ui.search import tab as ui_search


def test_peak_score_without_a_feature_index_is_a_message(tiny_atlas, tmp_path):
    import shutil

    import gradio as gr

    folder = tmp_path / "no_index"  # other tests may add an index to the shared tiny atlas
    shutil.copytree(tiny_atlas, folder, ignore=shutil.ignore_patterns("features"))
    with pytest.raises(gr.Error, match="no feature index"):
        ui_search.run_search(str(folder), "Paris", "peak")


def test_label_search_says_how_many_or_what_the_best_is(tiny_atlas):
    from sae_core.explore.search import features_by_label

    lmap = read_layer_map(tiny_atlas)
    table, status = ui_search.run_label_search(str(tiny_atlas), 1, "pos", "NOUN", 0.0, 1)
    assert len(table) == len(features_by_label(lmap, 1, "pos", "NOUN")) > 0
    assert status.startswith(f"{len(table)} feature(s)")
    table, status = ui_search.run_label_search(str(tiny_atlas), "all layers", "pos", "NOUN", 1.0,
                                             10_000)
    assert table.empty and status.startswith("No feature passes")
