"""The Features tab's callbacks on the tiny atlas."""

import json
import shutil

import pytest

from sae_core.atlas.layout import INDEX_DIR
from sae_core.explore.feature_index import (
    ensure_feature_index,
)
from sae_core.explore.feature_page import open_index
from ui.serving import session
from ui.serving.errors import NotReady


def test_tab_callbacks_on_tiny_atlas(tiny_atlas):
    import gradio as gr

    from ui.features import tab

    ensure_feature_index(tiny_atlas, lm=session.open_atlas(tiny_atlas).lm)
    folder = str(tiny_atlas)
    f = tab.random_alive(folder, 1, seed=3)
    assert open_index(tiny_atlas).layer_stats("layers.1")["n_fire"][f] > 0
    summary, hist, logits, html, density = tab.page_outputs(folder, 1, f)
    assert f"feature {f}" in summary and "<span" in html
    assert len(logits) == 10 and hist is not None and len(density.data) == 2
    assert tab.step_feature(folder, 1, 63, 1) == 0 and tab.step_feature(folder, 1, 0, -1) == 63
    for layer, feature in [(7, 0), (1, 64), (1, -3), (None, 0), ("x", 1), (1, None)]:
        with pytest.raises(ValueError):
            tab.page_outputs(folder, layer, feature)
        with pytest.raises(gr.Error):
            tab._ui(tab.page_outputs)(folder, layer, feature)
    # no set yet (the tab opened during the first build): what the tab will show, no error
    summary, *rest = tab.page_outputs(None, 1, 0)
    assert "will appear here" in summary and "SAE set" in summary and rest == [None, None, "", None]
    with pytest.raises(NotReady, match="will appear here"):
        tab.step_feature(None, 1, 0, 1)
    assert tab._ui(tab.step_feature)(None, 1, 0, 1) == gr.skip()  # an info toast, no error


def test_a_page_checks_the_sae_files_once(tiny_atlas, monkeypatch):
    """One feature page (with its names and lineage) hashes the SAE files once: the open
    atlas's fingerprint is handed to every product it reads, none checks again."""
    from sae_core.atlas import fingerprint
    from ui.features import tab

    ensure_feature_index(tiny_atlas, lm=session.open_atlas(tiny_atlas).lm)
    folder = str(tiny_atlas)
    tab.page_outputs(folder, 1, 0)  # warm: the model and atlas loaded, files read once
    calls = []
    digests = fingerprint.sae_file_digests
    monkeypatch.setattr(fingerprint, "sae_file_digests",
                        lambda *a, **k: calls.append(a) or digests(*a, **k))
    tab.page_outputs(folder, 1, 0)
    assert len(calls) == 1
    calls.clear()
    tab.lineage_output(folder, 1, 0)
    assert len(calls) == 1


def test_tab_without_index_says_so(tmp_path, tiny_atlas):
    from ui.features import tab

    folder = shutil.copytree(tiny_atlas, tmp_path / "atlas", ignore=shutil.ignore_patterns(
        INDEX_DIR))
    out = tab.page_outputs(str(folder), 0, 0)
    assert out[0] == tab.NO_INDEX and out[1] is None


def test_layer_numbers_map_to_the_atlas_hookpoints(tmp_path):
    from ui.features import tab

    hooks = ["layers.3.mlp", "layers.5.mlp", "layers.5"]
    (tmp_path / "atlas.json").write_text(json.dumps({"model": "m", "hookpoints": hooks}))
    # every SAE is a choice, its key the layer number for the residual stream only
    assert tab._layers(str(tmp_path)) == [("3 (MLP out)", "3 (MLP out)"),
                                          ("5 (MLP out)", "5 (MLP out)"), ("5", 5)]
    assert [tab._hookpoint(hooks, key) for _, key in tab._layers(str(tmp_path))] == hooks
    assert tab._hookpoint(hooks, 3) == "layers.3.mlp"  # the only SAE at layer 3
    assert tab._hookpoint(hooks, "5") == "layers.5"  # the residual one first
    with pytest.raises(ValueError, match=r"its layers are 3 \(MLP out\), 5 \(MLP out\), 5"):
        tab._hookpoint(hooks, 4)
