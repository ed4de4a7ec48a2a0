"""The layout of an SAE: the release's when it names one, else the files in its folder;
a folder of no known layout is a clear error naming what is there."""

import pytest

from sae_core.hub.fetch import HubError
from sae_core.hub.formats import LAYOUTS
from sae_core.hub.load import load_pretrained, load_sae
from tests.hub.repos import saelens_repo
from tests.hub.suite_files import D, S, npz_bytes, planted, put_repo, st_bytes, to_torch

GEMMA = {"w_enc": (D, S), "w_dec": (S, D), "b_enc": (S,), "b_dec": (D,), "threshold": (S,)}
PATH = "resid_post/layer_1_width_16k_l0_small"


def test_the_layout_a_release_names_is_used_without_probing(tmp_path):
    a = to_torch(planted(61, GEMMA))
    cache = put_repo(tmp_path, "google/gemma-scope-2-270m-pt",
                     {f"{PATH}/params.safetensors": st_bytes(a)})  # no config.json
    (sae, _), src = load_sae("google/gemma-scope-2-270m-pt", PATH, layout="gemma_3",
                             cache_dir=cache, trained_for="google/gemma-3-270m")
    assert (src.format, sae.cfg.hookpoint, sae.cfg.model_name) == (
        "gemma_3", "layers.1", "google/gemma-3-270m")
    # A release's layout wins over the files: these are not Gemma Scope's npz.
    with pytest.raises(HubError, match=r"'resid_post/layer_1_width_16k_l0_small/params\.npz'"):
        load_sae("google/gemma-scope-2-270m-pt", PATH, layout="gemma_2", cache_dir=cache)
    with pytest.raises(HubError, match="unknown layout 'temporal'"):
        load_sae("google/gemma-scope-2-270m-pt", PATH, layout="temporal", cache_dir=cache)


def test_saelens_folders_are_still_found_by_cfg_json(tmp_path):
    cache = saelens_repo(tmp_path)
    (sae, _), src = load_sae("org/tiny-saes", "sae", cache_dir=cache)
    assert src.format == "saelens" and sae.cfg.hookpoint == "layers.1"


def test_a_folder_of_no_known_layout_names_what_it_holds(tmp_path):
    cache = put_repo(tmp_path, "org/odd", {"sae/weights.bin": b"xx", "sae/notes.md": b"hi"})
    with pytest.raises(HubError) as err:
        load_pretrained("org/odd", "sae", cache_dir=cache)
    msg = str(err.value)
    assert "no known SAE layout in org/odd/sae" in msg and "params.npz (gemma_2)" in msg
    assert "found notes.md, weights.bin" in msg
    with pytest.raises(HubError, match="not in the local cache"):
        load_pretrained("org/absent", "sae", cache_dir=cache)


def test_every_layout_has_a_converter_and_its_files():
    from sae_core.hub.formats import CONVERTERS, MARKERS
    from sae_core.hub.torch_weights import PICKLE_LAYOUTS

    assert set(LAYOUTS) <= set(CONVERTERS)
    assert {layout for _, layout in MARKERS} <= set(LAYOUTS)
    for key in PICKLE_LAYOUTS:  # their weights are .pt/.pth (or the path is the file)
        assert LAYOUTS[key].weights in ("", "ae.pt")


def test_npz_is_read_without_copies_into_the_sae(tmp_path):
    """Gemma Scope's arrays become the SAE's parameters: W_enc a transposed view."""
    a = planted(62, {"W_enc": (D, S), "W_dec": (S, D), "b_enc": (S,), "b_dec": (D,),
                     "threshold": (S,)})
    repo, path = "google/gemma-scope-2b-pt-res", "layer_0/width_16k/average_l0_10"
    cache = put_repo(tmp_path, repo, {f"{path}/params.npz": npz_bytes(a)})
    (sae, _), _ = load_sae(repo, path, cache_dir=cache)
    assert sae.W_enc_SD.stride() == (1, S) and sae.W_enc.is_contiguous()
    assert sae.W_dec.is_contiguous()


def test_releases_give_the_layout_the_hook_and_the_norm_scale(tmp_path):
    """Through the release table: Gemma Scope 2 (hook from the table), R1-Distill (the
    table's norm scale folded by default), Qwen Scope (pickled: allowed in public mode only
    when the release is on the allow-list)."""
    from sae_core.hub.registry import RELEASES

    g3 = RELEASES["gemma-scope-2-270m-pt-res"]
    a = to_torch(planted(71, GEMMA))
    cache = put_repo(tmp_path, g3.repo_id, {
        f"{g3.path_of('layer_12_width_16k_l0_big')}/params.safetensors": st_bytes(a)})
    pset = load_pretrained(g3.name, "layer_12_width_16k_l0_big", cache_dir=cache)
    assert list(pset.saes) == ["layers.12"] and pset.sources["layers.12"].format == "gemma_3"
    assert pset.saes["layers.12"].cfg.model_name == g3.model

    r1 = RELEASES["llama_scope_r1_distill"]
    lin = planted(72, {"encoder.weight": (S, D), "encoder.bias": (S,),
                       "decoder.weight": (D, S), "decoder.bias": (D,),
                       "log_jumprelu_threshold": (S,)})
    path = r1.path_of("l1r_800m_slimpajama")
    put_repo(tmp_path, r1.repo_id, {
        f"{path}/config.json": {"d_model": D, "expansion_factor": 2,
                                "hook_point_in": "blocks.1.hook_resid_post"},
        f"{path}/sae_weights.safetensors": st_bytes(to_torch(lin))})
    pset = load_pretrained(r1.name, "l1r_800m_slimpajama", cache_dir=tmp_path)
    scale = r1.sae("l1r_800m_slimpajama").norm_scale
    assert pset.needs_scale == () and scale
    assert pset.saes["layers.1"].metadata["norm_scaling_factor"] == pytest.approx(scale)

    from sae_core.hub.torch_weights import PICKLE_ALLOW_LIST
    from tests.hub.suite_files import pt_bytes

    qwen = RELEASES["qwen-scope-3-1.7b-base-w32k-l50"]
    assert qwen.name in PICKLE_ALLOW_LIST
    q = planted(73, {"W_enc": (S, D), "W_dec": (D, S), "b_enc": (S,), "b_dec": (D,)})
    put_repo(tmp_path, qwen.repo_id, {"layer1.sae.pt": pt_bytes(to_torch(q))})
    pset = load_pretrained(qwen.name, "layer1", cache_dir=tmp_path, public=True)
    assert pset.saes["layers.1"].cfg.k == 50
    goodfire = RELEASES["goodfire-llama-3.1-8b-instruct"]
    with pytest.raises(HubError, match="public demo opens pickles only"):
        load_pretrained(goodfire.name, goodfire.sae_ids[0], cache_dir=tmp_path, public=True)
