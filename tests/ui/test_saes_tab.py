"""The SAEs tab loads a set from a hand-built Hub cache, exports it, and in the browser
switches the picker to it."""

import pytest
from huggingface_hub import constants

from sae_core.hub import export as hub_export
from tests.browser import browser_page, needs_chromium, served
from tests.hub.repos import two_layer_repo
from ui.saes import tab as saes_ui


def test_saes_tab_loads_from_the_hub_and_exports(tmp_path, tiny_atlas, monkeypatch):
    import gradio as gr

    cache = two_layer_repo(tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)  # checkpoints/ (atlas and export roots) land in tmp_path
    source, ids, model, note = saes_ui.release_fields("gpt2-small-res-jb")
    assert (source, ids, model) == ("gpt2-small-res-jb", "all", "gpt2") and "center" in note
    with pytest.raises(gr.Error, match="'org/absent' is not in the local cache"):
        saes_ui.hub_load("org/absent", "L0", "tiny-llama", "", None, progress=lambda *a, **k: 0)
    assert not (tmp_path / "checkpoints" / "atlas").exists() or not any(
        (tmp_path / "checkpoints" / "atlas").iterdir())
    picker, status, sets = saes_ui.hub_load("org/pair", "L1", "tiny-llama", "one",
                                            str(tiny_atlas), progress=lambda *a, **k: 0)
    new = "checkpoints/atlas/one"
    assert picker.value == new and [v for _, v in picker.choices] == sorted([str(tiny_atlas), new])
    assert "1 SAEs" in status and sets["SAE set"].tolist() == [new]
    assert sets["from"].tolist() == ["org/pair"]
    saes_ui.hub_load("org/pair", "L0", "tiny-llama", "", None, progress=lambda *a, **k: 0)
    picker, status, _ = saes_ui.hub_load("org/pair", "L0", "tiny-llama", "", None,
                                         progress=lambda *a, **k: 0)
    assert "already loaded" in status and picker.value.startswith("checkpoints/atlas/hub-org--pair")
    msg = saes_ui.export_set(new, "", "me/one")
    assert "checkpoints/export/one" in msg and (tmp_path / "checkpoints/export/one/README.md"
                                                ).exists()
    with pytest.raises(gr.Error, match="not empty"):
        saes_ui.export_set(new, "", "me/one")
    monkeypatch.setattr(hub_export, "get_token", lambda: None)
    with pytest.raises(gr.Error, match="no Hugging Face token"):
        saes_ui.push_set(new, "", "me/one")


@needs_chromium
def test_hub_load_in_the_browser_selects_the_new_set(tmp_path, tiny_atlas, monkeypatch):
    """Type a repo, load it, and see the picker and summary switch to the new set."""
    import app

    cache = two_layer_repo(tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    with served(app.build_app(tiny_atlas)) as url, browser_page(url) as page:
        page.get_by_role("tab", name="SAEs").click()
        page.get_by_label("Release or Hub repo id").fill("org/pair")
        page.get_by_label("SAE ids or folders").fill("L0, L1")
        page.get_by_label("Model to run them on").fill("tiny-llama")
        page.get_by_label("Name of the new set").fill("pair")
        page.get_by_role("button", name="Load from the Hub").click()
        page.get_by_text("it is now the active set").wait_for(timeout=60_000)
        page.get_by_text("loaded from org/pair").wait_for(timeout=15_000)  # the summary
        assert page.get_by_label("SAE set").first.input_value() == "checkpoints/atlas/pair"
        page.get_by_label("Name of the new set").fill("pair")
        page.get_by_role("button", name="Load from the Hub").click()
        page.get_by_text("already exists").first.wait_for(timeout=30_000)
