"""Public mode: strangers load only registry releases on allowed models, never with the
server's token, and the app registers no export or push endpoint."""

import dataclasses
import json
from collections import OrderedDict

import pytest
from huggingface_hub import constants
from safetensors.torch import save as st_bytes

from sae_core.hub import fetch as hub_fetch
from sae_core.hub.fetch import HubError
from sae_core.hub.registry import RELEASES
from sae_core.lm import EMBEDDED_ID
from tests.conftest import tiny_lm
from tests.hub.repos import put_repo, raw_saelens, v6_cfg
from ui.saes import tab as saes_ui
from ui.serving import public, session
from ui.serving.public import (
    Policy,
    PolicyError,
    check_model,
    check_sae_ids,
    check_source,
    hub_token,
)

PUBLIC, PRIVATE = Policy.for_mode(True), Policy.for_mode(False)
PYTHIA = "pythia-70m-deduped-res-sm"
NO_PROGRESS = dict(progress=lambda *a, **k: 0)


@pytest.fixture
def as_policy(monkeypatch):
    """Serve under a policy for one test (set_policy, restored after)."""
    def use(policy):
        monkeypatch.setattr(public, "_current", policy)
    return use


@pytest.fixture
def clean_session(monkeypatch):
    """A session whose caches start empty and are restored after the test."""
    monkeypatch.setattr(session, "_models", OrderedDict())
    monkeypatch.setattr(session, "_atlases", OrderedDict())
    monkeypatch.setattr(session, "_pinned", dict(session._pinned))


def test_allowed_models_are_the_embedded_and_the_public_releases_models():
    assert PUBLIC.allowed_models[0] == EMBEDDED_ID
    assert set(PUBLIC.allowed_models) == {EMBEDDED_ID, *(RELEASES[n].model for n in
                                                          public.PUBLIC_RELEASES)}
    assert {"gpt2", "EleutherAI/pythia-70m-deduped", "HuggingFaceTB/SmolLM2-135M"} <= set(
        PUBLIC.allowed_models)
    assert PRIVATE.allowed_models == () and not public.policy().public  # the default
    assert hub_token(PUBLIC) is False and hub_token(PRIVATE) is None


def test_public_checks_refuse_free_text_paths_and_unknown_releases(tmp_path, monkeypatch):
    for bad in ("org/free-text", "/etc", "./checkpoints", "", "gpt2x"):
        with pytest.raises(PolicyError, match="runs SAEs only on"):
            check_model(PUBLIC, bad)
    assert check_model(PUBLIC, " gpt2 ") == "gpt2"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gpt2").mkdir()  # from_pretrained("gpt2") would read this folder
    with pytest.raises(PolicyError, match="local path"):
        check_model(PUBLIC, "gpt2")
    assert check_model(PRIVATE, "gpt2") == "gpt2" and check_model(PRIVATE, "/x") == "/x"
    for bad in ("org/pair", str(tmp_path), "../atlas", "no-such-release", " "):
        with pytest.raises(PolicyError, match="loads only the known releases"):
            check_source(PUBLIC, bad)
    assert check_source(PUBLIC, f" {PYTHIA} ") == PYTHIA
    assert check_source(PRIVATE, "org/pair") == "org/pair"


def test_public_sae_ids_belong_to_the_release_and_are_few():
    assert check_sae_ids(PUBLIC, PYTHIA, "all") == "all"  # 6 SAEs
    assert check_sae_ids(PUBLIC, "gpt2-small-res-jb", " all") == "all"  # 12
    with pytest.raises(PolicyError, match="at most 12 SAEs"):
        check_sae_ids(PUBLIC, "EleutherAI/sae-SmolLM2-135M-64x", "all")  # 30
    with pytest.raises(HubError, match=r"has no SAE '\.\./x'"):
        check_sae_ids(PUBLIC, PYTHIA, "blocks.0.hook_resid_post, ../x")
    with pytest.raises(HubError, match="at least one"):
        check_sae_ids(PUBLIC, PYTHIA, " ")
    assert check_sae_ids(PRIVATE, "org/pair", "../x") == "../x"


def test_public_hub_load_refuses_before_loading_anything(as_policy, clean_session, monkeypatch):
    import gradio as gr

    def never(*args, **kwargs):
        raise AssertionError("nothing may load")

    monkeypatch.setattr(saes_ui, "load_pretrained_atlas", never)
    monkeypatch.setattr(session, "load_named", never)
    as_policy(PUBLIC)
    cases = [("org/pair", "L0", EMBEDDED_ID, "loads only the known releases"),
             ("/tmp", "L0", EMBEDDED_ID, "loads only the known releases"),
             ("gpt2-small-res-jbx", "all", "gpt2", "loads only the known releases"),
             (PYTHIA, "all", "org/my-model", "runs SAEs only on"),
             (PYTHIA, "all", "/models/secret", "runs SAEs only on"),
             (PYTHIA, "blocks.9.hook_resid_post", "gpt2", "has no SAE")]
    for source, ids, model, message in cases:
        with pytest.raises(gr.Error, match=message):
            saes_ui.hub_load(source, ids, model, "", None, **NO_PROGRESS)
    with pytest.raises(PolicyError, match="runs SAEs only on"):
        session.model("tiny-llama-not-registered")
    with pytest.raises(gr.Error, match="does not push"):
        saes_ui.push_set("checkpoints/atlas/x", "", "me/x")


def _pythia_repo(tmp_path):
    """The first and third SAEs of the pythia release, tiny, in a hand-built Hub cache."""
    files = {}
    for i in (0, 2):
        hook = f"blocks.{i}.hook_resid_post"
        files[f"{i}-res-sm/cfg.json"] = v6_cfg("topk", hook=hook, model="pythia-70m-deduped",
                                               k=4)
        files[f"{i}-res-sm/sae_weights.safetensors"] = st_bytes(raw_saelens(seed=i))
    return put_repo(tmp_path / "cache", RELEASES[PYTHIA].repo_id, files)


@pytest.mark.parametrize("policy", [PUBLIC, PRIVATE], ids=["public", "private"])
def test_the_token_reaches_every_hub_call(policy, tmp_path, tiny_atlas, as_policy, clean_session,
                                          monkeypatch):
    """A registry release loads in both modes; every hf_hub_download gets token=False in
    public mode (send none) and None (the configured token) otherwise."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(_pythia_repo(tmp_path)))
    monkeypatch.chdir(tmp_path)
    corpus = json.loads((tiny_atlas / "atlas.json").read_text())["corpus"]
    tokens, real_download = [], hub_fetch.hf_hub_download

    def recorded(*args, **kwargs):
        tokens.append(kwargs["token"])
        return real_download(*args, **kwargs)

    monkeypatch.setattr(hub_fetch, "hf_hub_download", recorded)
    real_load = saes_ui.load_pretrained_atlas
    monkeypatch.setattr(saes_ui, "load_pretrained_atlas", lambda *a, **kw: real_load(
        *a, **kw, corpus=corpus, seq_len=16, held_out=8))  # the tiny corpus, fast
    session.register_model(dataclasses.replace(tiny_lm(), name="EleutherAI/pythia-70m-deduped"))
    as_policy(policy)
    ids = "blocks.0.hook_resid_post, blocks.2.hook_resid_post"
    picker, status, sets = saes_ui.hub_load(PYTHIA, ids, "EleutherAI/pythia-70m-deduped",
                                            "my-name", None, **NO_PROGRESS)
    assert "2 SAEs" in status and sets["from"].tolist() == [PYTHIA]
    # Public mode ignores the custom name: identical loads share the default folder.
    assert (picker.value == "checkpoints/atlas/my-name") is not policy.public
    assert len(tokens) == 4 and set(tokens) == {hub_token(policy)}  # 2 x (cfg.json, weights)


def test_session_models_load_without_the_token_in_public_mode(as_policy, clean_session,
                                                              monkeypatch):
    calls = []
    monkeypatch.setattr(session, "load_named", lambda name, token, device="cpu": calls.append(
        (name, token)) or dataclasses.replace(tiny_lm(), name=name))
    as_policy(PUBLIC)
    session.model(EMBEDDED_ID)
    as_policy(PRIVATE)
    session.model("org/private-model")
    assert calls == [(EMBEDDED_ID, False), ("org/private-model", None)]


def _endpoints(policy, as_policy):
    import gradio as gr

    as_policy(policy)
    with gr.Blocks() as demo:
        picker = gr.Dropdown(["a"], value=None, label="SAE set")
        saes_ui.build_saes_tab(picker)
    names = {fn.name for fn in demo.fns.values()}
    api = {d.get("api_name") for d in demo.get_config_file()["dependencies"]}
    return names, api


def test_public_blocks_register_no_export_or_push(as_policy):
    names, api = _endpoints(PRIVATE, as_policy)
    assert {"push_set", "export_set", "hub_load", "run_sweep"} <= names
    assert {"push_set", "export_set", "run_sweep"} <= api
    names, api = _endpoints(PUBLIC, as_policy)
    assert "hub_load_release" in names and "hub_load_release" in api
    assert not {"push_set", "export_set", "hub_load", "run_sweep"} & (names | api)


def test_public_lab_reads_only_served_sets(as_policy, tiny_atlas):
    """The lab's plots read a set's files only where a visitor may open it."""
    from ui.saes import lab_panel

    assert lab_panel.set_frontier(str(tiny_atlas)) is not None  # private: any folder
    as_policy(PUBLIC)
    assert lab_panel.set_frontier(str(tiny_atlas)) is None  # not under checkpoints/atlas
    assert lab_panel.lab_runs(str(tiny_atlas), root=tiny_atlas) == {}
