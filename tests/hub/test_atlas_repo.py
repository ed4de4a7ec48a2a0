"""A built atlas pushed to a (fake) Hub, taken back from the Hub cache offline by the real
`snapshot_download`, and checked: every kind of damage is named."""

import json
import re
import shutil

import pytest
import torch
from huggingface_hub import ModelCard, constants
from safetensors.torch import load_file, save_file

from sae_core.__main__ import main
from sae_core.atlas.layout import load_atlas
from sae_core.explore.feature_index import ensure_feature_index
from sae_core.hub import atlas_repo
from sae_core.hub.atlas_repo import (
    AtlasCheckError,
    check_atlas,
    fetch_atlas,
    open_hub_atlas,
    parse_repo_spec,
    push_atlas,
)
from sae_core.hub.export import ATLAS_TAG, CARD_TAGS
from sae_core.hub.fetch import HubError
from sae_core.steer.presets import ensure_presets
from tests.hub.repos import fake_hf_api, put_repo
from ui.serving import session

D = 32  # the tiny model's d_model
NOT_PUBLISHED = ["_checkpoint/state.safetensors", "_checkpoint/cfg.json", "labels.tmp",
                 "features/index.json.lock", "layers.0/sae_weights.safetensors.tmp",
                 ".nfs0001", "tmp_layer_map.json"]


@pytest.fixture(scope="module")
def built(tiny_atlas, tmp_path_factory):
    """The tiny atlas with its layer map, feature index and steering presets."""
    out = tmp_path_factory.mktemp("built") / "tiny"
    shutil.copytree(tiny_atlas, out)
    ensure_feature_index(out, lm=session.model("tiny-llama"))
    ensure_presets(out, session.open_atlas(out))  # the shipped concepts: all fail on it
    return out


@pytest.fixture
def atlas(built, tmp_path):
    """A fresh copy of the built atlas, free to damage."""
    return shutil.copytree(built, tmp_path / "atlas")


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The fake Hub: (cache it commits into, calls made)."""
    cache, calls = tmp_path / "hf-cache", []
    monkeypatch.setattr(atlas_repo, "HfApi", fake_hf_api(cache, calls))
    monkeypatch.setattr(atlas_repo, "get_token", lambda: None)
    return cache, calls


def files_of(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_push_then_fetch_offline_is_the_same_atlas(atlas, hub):
    cache, calls = hub
    for name in NOT_PUBLISHED:
        (atlas / name).parent.mkdir(exist_ok=True)
        (atlas / name).write_bytes(b"scratch")
    url = push_atlas(atlas, "me/tiny-atlas", token="secret")
    assert constants.HF_HUB_OFFLINE  # the fetch below can only read the cache
    snapshot = fetch_atlas("me/tiny-atlas", cache_dir=cache)
    assert url.endswith(snapshot.name) and snapshot.parent.name == "snapshots"
    original, fetched = files_of(atlas), files_of(snapshot)
    assert set(fetched) == set(original) - set(NOT_PUBLISHED)
    assert {"atlas.json", "layer_map.json", "features/index.json", "features/layers.2"
            ".safetensors", "layers.1/sae_weights.safetensors", "presets.json"} <= set(fetched)
    assert all(fetched[n] == original[n] for n in fetched if n != "README.md")
    assert check_atlas(snapshot, model="tiny-llama", d_model=D) == []
    assert open_hub_atlas("me/tiny-atlas", model="tiny-llama", d_model=D,
                          cache_dir=cache) == snapshot
    _, _, saes, _ = load_atlas(snapshot)
    assert list(saes) == ["layers.0", "layers.1", "layers.2"]
    assert calls[0] == ("token", "secret")
    assert calls[1] == ("create_repo", "me/tiny-atlas", {"exist_ok": True, "private": False})
    sent = calls[2][2]
    assert calls[2][1] == "me/tiny-atlas" and sent["folder_path"] == atlas
    assert "_checkpoint/*" in sent["ignore_patterns"] and sent["revision"] is None

    card = ModelCard.load(snapshot / "README.md")
    assert card.data.library_name == "saelens" and card.data.tags == [*CARD_TAGS, ATLAS_TAG]
    assert card.data.base_model is None  # tiny-llama is no Hub id
    assert "SAE_ATLAS_REPO=me/tiny-atlas" in card.text
    for part in ("layer map", "feature index", "steering presets", "`presets.json`"):
        assert part in card.text


def test_fetch_reads_the_default_cache_and_revisions(atlas, hub, monkeypatch):
    cache, calls = hub
    push_atlas(atlas, "me/tiny-atlas", token="t", revision="v1")
    assert ("create_branch", "me/tiny-atlas", {"branch": "v1", "exist_ok": True}) in calls
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # what HF_HUB_CACHE sets
    snapshot = fetch_atlas("me/tiny-atlas@v1")
    assert (snapshot / "atlas.json").read_bytes() == (atlas / "atlas.json").read_bytes()
    with pytest.raises(HubError, match="'me/tiny-atlas' at revision 'main' is not in the Hub"):
        fetch_atlas("me/tiny-atlas@main")
    with pytest.raises(HubError, match=r"'me/elsewhere' is not in the Hub cache .*OFFLINE"):
        fetch_atlas("me/elsewhere")


def damage(atlas):
    """Five kinds of damage; returns the sentences check_atlas must say about them."""
    (atlas / "layers.1" / "sae_weights.safetensors").unlink()
    weights = atlas / "layers.2" / "sae_weights.safetensors"
    tensors = load_file(weights)
    d_sae = tensors["b_enc"].shape[0]
    save_file(tensors | {"W_dec": torch.zeros(d_sae, D + 1)}, weights)
    (atlas / "features" / "layers.0.safetensors").unlink()
    metrics = json.loads((atlas / "metrics.json").read_text())
    del metrics["layers.2"]
    (atlas / "metrics.json").write_text(json.dumps(metrics))
    (atlas / "layer_map.json").unlink()
    return [
        "The SAE of layers.1 is incomplete: sae_weights.safetensors missing.",
        f"layers.2/sae_weights.safetensors: W_dec has shape [{d_sae}, {D + 1}], but cfg.json "
        f"(d_in={D}, d_sae={d_sae}) needs [{d_sae}, {D}].",
        "metrics.json has no entry for layers.2.",
        "The layer map is missing (layer_map.json).",
        "The feature index file features/layers.0.safetensors is missing.",
    ]


def test_check_atlas_names_every_problem(atlas, tmp_path):
    expected = damage(atlas)
    assert check_atlas(atlas, model="tiny-llama", d_model=D) == expected
    wrong = check_atlas(atlas, model="other/model", d_model=D + 8)
    assert wrong[0] == "The atlas was built for the model 'tiny-llama', not 'other/model'."
    assert f"The SAE of layers.0 reads width {D}, but the model has d_model={D + 8}." in wrong
    assert check_atlas(tmp_path / "nothing", model="tiny-llama", d_model=D) == [
        f"{tmp_path / 'nothing'} is not an atlas: atlas.json is missing or unreadable."]
    # The same damage in a Hub cache (a partial or broken repo): the app is told why.
    cache = put_repo(tmp_path / "cache", "me/broken", files_of(atlas))
    with pytest.raises(AtlasCheckError) as err:
        open_hub_atlas("me/broken", model="tiny-llama", d_model=D, cache_dir=cache)
    assert str(err.value) == ("the atlas 'me/broken' from the Hub cannot be used: "
                              + " ".join(expected))


def test_check_atlas_reads_corrupt_files_as_problems(atlas):
    (atlas / "features" / "layers.1.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00")
    (atlas / "presets.json").write_text("{not json")
    info = json.loads((atlas / "atlas.json").read_text())
    (atlas / "atlas.json").write_text(json.dumps(info | {"hookpoints": [*info["hookpoints"],
                                                                        "../../etc"]}))
    problems = check_atlas(atlas, model="tiny-llama", d_model=D)
    assert problems[0] == "atlas.json names the hookpoint '../../etc', which is not layers.N " \
                          "or layers.N.mlp."
    assert any(p.startswith("The feature index file features/layers.1.safetensors is corrupt")
               for p in problems)
    assert problems[-1] == "presets.json is not valid JSON."
    assert len(problems) == 3


def test_push_refuses_what_is_not_a_finished_atlas(atlas, hub, tmp_path):
    _, calls = hub
    with pytest.raises(HubError, match="no Hugging Face token is configured"):
        push_atlas(atlas, "me/tiny-atlas")
    assert calls == [] and not (atlas / "README.md").exists()  # nothing uploaded or written
    with pytest.raises(HubError, match=r"not a finished atlas .*python -m sae_core train"):
        push_atlas(tmp_path, "me/tiny-atlas", token="t")
    shutil.rmtree(atlas / "features")
    with pytest.raises(HubError, match=r"no feature index .*ensure_feature_index"):
        push_atlas(atlas, "me/tiny-atlas", token="t")
    (atlas / "layer_map.json").unlink()
    with pytest.raises(HubError, match=r"no layer map .*ensure_layer_map"):
        push_atlas(atlas, "me/tiny-atlas", token="t")
    assert calls == []


def test_push_refuses_a_damaged_atlas(atlas, hub):
    (atlas / "layers.0" / "cfg.json").unlink()
    with pytest.raises(HubError, match=re.escape("not ready to publish: The SAE of layers.0 "
                                                 "is incomplete: cfg.json missing.")):
        push_atlas(atlas, "me/tiny-atlas", token="t")
    assert hub[1] == []


@pytest.mark.parametrize("spec, parsed", [
    ("me/tiny-atlas", ("me/tiny-atlas", None)),
    (" me/tiny.atlas_2@v1 ", ("me/tiny.atlas_2", "v1")),
    ("me/x@refs/pr/3", ("me/x", "refs/pr/3")),
])
def test_parse_repo_spec(spec, parsed):
    assert parse_repo_spec(spec) == parsed


@pytest.mark.parametrize("spec", ["", "tiny-atlas", "a/b/c", "me/x@", "me/bad--name",
                                  "me/x@a b", "../x", "me/x.git", "me/x@../main"])
def test_parse_repo_spec_refuses(spec):
    with pytest.raises(ValueError, match="is not a Hugging Face repo"):
        parse_repo_spec(spec)


def test_cli_push(built, hub, tmp_path, monkeypatch, capsys):
    _, calls = hub
    monkeypatch.chdir(tmp_path)
    shutil.copytree(built, tmp_path / "checkpoints" / "atlas" / "pub")
    args = ["push", "--atlas", "pub", "--repo", "me/tiny-atlas"]
    assert main(args) == 2
    assert capsys.readouterr().err.startswith("error: no Hugging Face token is configured")
    assert main(["push", "--atlas", "nope", "--repo", "me/x"]) == 2
    assert "checkpoints/atlas/nope is not a finished atlas" in capsys.readouterr().err
    assert main(["push", "--atlas", "pub", "--repo", "tiny-atlas"]) == 2
    assert "'tiny-atlas' is not a Hugging Face repo" in capsys.readouterr().err
    assert calls == []
    monkeypatch.setattr(atlas_repo, "get_token", lambda: "fake-token")
    assert main([*args, "--private", "--revision", "dev"]) == 0
    assert capsys.readouterr().out.startswith("pushed pub to me/tiny-atlas: https://hub/")
    assert calls[:3] == [("token", "fake-token"),
                         ("create_repo", "me/tiny-atlas", {"exist_ok": True, "private": True}),
                         ("create_branch", "me/tiny-atlas", {"branch": "dev", "exist_ok": True})]
    sent = calls[3][2]
    assert sent["folder_path"].resolve() == (tmp_path / "checkpoints/atlas/pub").resolve()
    assert sent["revision"] == "dev"
    assert {"_checkpoint", "_checkpoint/*", "*.tmp", "*.lock"} <= set(sent["ignore_patterns"])
