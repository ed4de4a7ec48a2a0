"""The SAEs tab's Hub section: model -> release -> layer -> SAE ids, search, the releases
the app cannot load with the reason, and the Neuronpedia link on a feature page."""

import json

import pytest

from sae_core.hub.registry import RELEASES
from sae_core.hub.releases import verdict
from ui.saes import hub_panel
from ui.saes import tab as saes_ui
from ui.serving import public
from ui.serving.public import PUBLIC_RELEASES, Policy


def test_model_release_layer_and_sae_choices():
    assert hub_panel.model_choices()[0] == hub_panel.ALL_MODELS
    assert {"gpt2", "google/gemma-2-2b"} <= set(hub_panel.model_choices())
    names = [n for _, n in hub_panel.release_choices("gpt2")]
    assert "gpt2-small-res-jb" in names and names == [  # the loadable ones on gpt2
        n for n, r in RELEASES.items() if r.model == "gpt2" and verdict(r).ok]
    assert [n for _, n in hub_panel.release_choices(None, "res-jb-feature")] == [
        "gpt2-small-res-jb-feature-splitting"]
    assert hub_panel.layer_choices("gpt2-small-res-jb") == [hub_panel.ALL_LAYERS, *range(1, 12)]
    assert hub_panel.sae_choices("gpt2-small-res-jb", 11) == [
        "blocks.11.hook_resid_pre", "blocks.11.hook_resid_post"]
    assert hub_panel.sae_choices("gpt2-small-res-jb", hub_panel.ALL_LAYERS, "post") == [
        "blocks.11.hook_resid_post"]
    assert hub_panel.sae_choices("no-such", 3) == [] and hub_panel.layer_choices(None) == [
        hub_panel.ALL_LAYERS]


def test_the_releases_it_cannot_load_are_listed_with_the_reason():
    table = hub_panel.refused_table(hub_panel.ALL_MODELS)
    why = dict(zip(table["release"], table["why not"], strict=True))
    assert why["mntss-gemma-2-2b-2.5m-clt-as-per-layer"].startswith("cross-layer transcoder")
    assert why["mistral-7b-res-wg"] == "normalisation constant_norm_rescale not supported"
    assert "gpt2-small-res-jb" not in why
    assert set(hub_panel.refused_table("gpt2")["model"]) <= {"gpt2"}


def test_release_fields_and_hub_load_refuse_an_sae_it_cannot_load():
    import gradio as gr

    source, ids, model, note = saes_ui.release_fields("pythia-70m-deduped-res-sm")
    assert (source, ids, model) == ("pythia-70m-deduped-res-sm", "all",
                                    "EleutherAI/pythia-70m-deduped")
    assert "6 loadable SAEs" in note
    assert "1 of its SAEs (hook blocks.N.hook_resid_pre has no hookpoint here)" in note
    assert saes_ui.release_fields("gemma-2-9b-res-matryoshka-dc")[1] == ""  # 41: too many
    assert saes_ui.release_fields("mntss-gemma-2-2b-2.5m-clt-as-per-layer")[1] == ""  # none
    with pytest.raises(gr.Error, match=r"blocks\.0\.hook_resid_pre cannot be loaded here: hook"):
        saes_ui.hub_load("gpt2-small-res-jb", "blocks.0.hook_resid_pre", "gpt2", "", None,
                         progress=lambda *a, **k: 0)


def test_public_mode_offers_its_few_releases(monkeypatch):
    from ui.saes.release_list import list_releases

    monkeypatch.setattr(public, "_current", Policy.for_mode(True))
    assert {n for _, n in hub_panel.release_choices(None)} == set(PUBLIC_RELEASES)
    why = dict(zip(*(hub_panel.refused_table(None)[c] for c in ("release", "why not")),
                   strict=True))
    assert why["gpt2-small-res-jb-feature-splitting"] == "not offered on this public demo"
    listed = {r["release"]: r for r in list_releases()}
    assert listed["gpt2-small-resid-post-v5-32k"]["why_not"] == "not offered on this public demo"
    assert listed["gpt2-small-res-jb"]["loadable"]
    json.dumps(listed)  # plain data


def test_a_feature_page_links_to_neuronpedia(tiny_atlas, tmp_path):
    """A set loaded from a release whose SAE has a Neuronpedia id links each feature there."""
    import shutil

    from sae_core.explore.feature_index import ensure_feature_index
    from ui.features.tab import page_outputs
    from ui.serving import session

    ensure_feature_index(tiny_atlas, lm=session.open_atlas(tiny_atlas).lm)
    assert "### Layer 1, feature 5" in page_outputs(str(tiny_atlas), 1, 5)[0]
    assert "neuronpedia" not in page_outputs(str(tiny_atlas), 1, 5)[0].lower()
    folder = tmp_path / "from-a-release"
    shutil.copytree(tiny_atlas, folder)
    info = json.loads((folder / "atlas.json").read_text())
    info["source"] = {"release": "gpt2-small-res-jb", "repo_id": "x/y",
                      "paths": {"layers.1": "blocks.2.hook_resid_pre"}}
    (folder / "atlas.json").write_text(json.dumps(info))
    summary = page_outputs(str(folder), 1, 5)[0]
    assert "(https://www.neuronpedia.org/gpt2-small/2-res-jb/5)" in summary
    assert "neuronpedia" not in page_outputs(str(folder), 0, 5)[0].lower()  # no path there
