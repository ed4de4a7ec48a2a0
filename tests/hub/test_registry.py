"""The release table (assets/sae_releases.json) loads, is well-formed, and keeps the four
releases the registry once listed by hand."""

import json
import re

import pytest

from sae_core.hub.fetch import HubError, check_repo
from sae_core.hub.formats import hookpoint_of
from sae_core.hub.load import load_pretrained
from sae_core.hub.registry import RELEASES, TABLE_FILE, read_table, same_model
from sae_core.lm import EMBEDDED_ID

HAND_WRITTEN = {
    # The hand-written table this one replaced (name: repo, model, layout, {SAE id: path}).
    "EleutherAI/sae-SmolLM2-135M-64x": (
        "EleutherAI/sae-SmolLM2-135M-64x", "HuggingFaceTB/SmolLM2-135M", "sparsify",
        {f"layers.{i}.mlp": f"layers.{i}.mlp" for i in range(30)}),
    "gpt2-small-res-jb": (
        "jbloom/GPT2-Small-SAEs-Reformatted", "gpt2", "saelens",
        {h: h for h in [*(f"blocks.{i}.hook_resid_pre" for i in range(1, 12)),
                        "blocks.11.hook_resid_post"]}),
    "pythia-70m-deduped-res-sm": (
        "ctigges/pythia-70m-deduped__res-sm_processed", "EleutherAI/pythia-70m-deduped",
        "saelens", {f"blocks.{i}.hook_resid_post": f"{i}-res-sm" for i in range(6)}),
    "pythia-70m-deduped-mlp-sm": (
        "ctigges/pythia-70m-deduped__mlp-sm_processed", "EleutherAI/pythia-70m-deduped",
        "saelens", {f"blocks.{i}.hook_mlp_out": f"{i}-mlp-sm" for i in range(6)}),
}


def test_the_table_holds_saelens_whole_release_table_and_the_sparsify_extra():
    raw = json.loads(TABLE_FILE.read_text())
    assert raw["source"] == "sae-lens 6.54.12 sae_lens/pretrained_saes.yaml"
    assert len(RELEASES) == 171 == len(raw["releases"])  # SAELens's 170 + SmolLM2's sparsify
    assert sum(len(r.saes) for r in RELEASES.values()) == 13_857 + 30
    assert sum(bool(s.neuronpedia) for r in RELEASES.values() for s in r.saes) == 2_441
    assert read_table(TABLE_FILE) == RELEASES


def test_every_release_is_well_formed():
    for name, release in RELEASES.items():
        assert release.name == name and check_repo(release.repo_id) == release.repo_id
        assert release.model and re.fullmatch(r"[a-z0-9_]+", release.format), name
        assert release.saes and len(set(release.sae_ids)) == len(release.saes), name
        for sae in release.saes:
            assert sae.id and sae.path and not sae.path.startswith("/"), (name, sae)
            assert re.fullmatch(r"(blocks\.\d+\.|layers\.\d+\.?)?[a-z0-9_.]*", sae.hook), sae
            assert not sae.neuronpedia or re.fullmatch(r"[\w.-]+/[\w.-]+", sae.neuronpedia)
            assert sae.norm_scale is None or sae.norm_scale > 0
            assert sae.l0 is None or sae.l0 >= 0


def test_the_hand_written_releases_keep_their_repo_model_and_folders():
    for name, (repo, model, layout, paths) in HAND_WRITTEN.items():
        release = RELEASES[name]
        assert (release.repo_id, release.model, release.format) == (repo, model, layout)
        assert {i: release.path_of(i) for i in paths} == paths
        for sae_id in paths:
            hookpoint_of(release.sae(sae_id).hook)  # each maps onto a hookpoint here
    assert RELEASES["EleutherAI/sae-SmolLM2-135M-64x"].run_on == EMBEDDED_ID
    assert "base* SmolLM2" in RELEASES["EleutherAI/sae-SmolLM2-135M-64x"].note
    assert "center_writing_weights" in RELEASES["gpt2-small-res-jb"].note
    # The embeddings' SAEs, which the hand-written table left out, are listed now.
    assert RELEASES["pythia-70m-deduped-res-sm"].path_of("blocks.0.hook_resid_pre") == "e-res-sm"


def test_derived_fields_of_a_few_suites():
    gs = RELEASES["gemma-scope-2b-pt-res-canonical"].sae("layer_20/width_16k/canonical")
    assert (gs.path, gs.hook, gs.neuronpedia) == (
        "layer_20/width_16k/average_l0_71", "blocks.20.hook_resid_post",
        "gemma-2-2b/20-gemmascope-res-16k")
    assert RELEASES["gemma-scope-2b-pt-res-canonical"].model == "google/gemma-2-2b"
    tc = RELEASES["gemma-scope-2-270m-pt-transcoders-all"].saes[0]
    assert (tc.hook, tc.hook_out, tc.path.split("/")[0]) == (
        "blocks.0.hook_mlp_in", "blocks.0.hook_mlp_out", "transcoder_all")
    ls = RELEASES["llama_scope_lxm_8x"].sae("l3m_8x")
    assert ls.hook == "blocks.3.hook_mlp_out" and ls.norm_scale > 0 and ls.layer == 3
    assert RELEASES["llama_scope_lxm_8x"].norm_scales["l3m_8x"] == ls.norm_scale
    assert RELEASES["qwen-scope-3-8b-base-w64k-l50"].sae("layer7").hook == \
        "blocks.7.hook_resid_post"


def test_unknown_ids_and_models():
    assert same_model("gpt2-small", "gpt2") and not same_model("gpt2", "")
    assert same_model("gemma-2-2b", "google/gemma-2-2b")
    with pytest.raises(HubError, match="not in the local cache"):
        load_pretrained("pythia-70m-deduped-mlp-sm", "all", cache_dir="/nonexistent-cache")
    with pytest.raises(HubError, match=r"has no SAE 'blocks\.99\.hook_resid_pre'"):
        load_pretrained("gpt2-small-res-jb", "blocks.99.hook_resid_pre")
