"""Gemma Scope 1 and 2 and Llama Scope (and its R1-Distill series) load from hand-built Hub
caches in their exact layouts, and encode and decode as plain numpy versions of each
suite's math; a naive reading (threshold ignored, b_dec subtracted, scale not folded,
embedding scale missed) differs, so the special math is what runs."""

import math

import numpy as np
import pytest
import torch

from sae_core.hub.fetch import HubError
from sae_core.hub.load import load_pretrained, load_sae
from tests.hub.suite_files import (
    D,
    S,
    jump,
    npz_bytes,
    planted,
    put_repo,
    st_bytes,
    to_torch,
    x_ND,
)

G2_REPO, G2_PATH = "google/gemma-scope-2b-pt-res", "layer_1/width_16k/average_l0_71"
G3_REPO = "google/gemma-scope-2-270m-pt"
G3_PATH = "resid_post/layer_1_width_16k_l0_small"
GEMMA_SHAPES = {"W_enc": (D, S), "W_dec": (S, D), "b_enc": (S,), "b_dec": (D,),
                "threshold": (S,)}


def ours(sae, x):
    with torch.no_grad():
        acts = sae.encode(torch.from_numpy(x))
        return acts.numpy(), sae.decode(acts).numpy()


def close(a, b) -> bool:
    return np.allclose(a, b, rtol=1e-4, atol=1e-4)


def check(sae, x, ref_acts, ref_hat, naive_acts: list) -> None:
    """Ours equals the reference; every naive reading differs from it."""
    acts, x_hat = ours(sae, x)
    assert close(acts, ref_acts) and close(x_hat, ref_hat)
    assert 0 < (ref_acts > 0).mean() < 1
    for naive in naive_acts:
        assert not close(naive, ref_acts)


def test_gemma_scope_jumprelu_without_b_dec_subtraction(tmp_path, lm):
    a = planted(1, GEMMA_SHAPES)
    cache = put_repo(tmp_path, G2_REPO, {f"{G2_PATH}/params.npz": npz_bytes(a)})
    pset = load_pretrained(G2_REPO, G2_PATH, cache_dir=cache, lm=lm)
    assert "trained for google/gemma-2-2b, not tiny-llama" in pset.warnings[0]
    sae, src = pset.saes["layers.1"], pset.sources["layers.1"]
    assert (src.format, sae.cfg.d_sae, sae.cfg.model_name) == ("gemma_2", S, "google/gemma-2-2b")
    x = x_ND()
    pre = x.astype(np.float64) @ a["W_enc"] + a["b_enc"]
    ref = jump(pre, a["threshold"])
    check(sae, x, ref, ref @ a["W_dec"] + a["b_dec"], naive_acts=[
        np.maximum(pre, 0),  # threshold ignored
        jump((x - a["b_dec"]) @ a["W_enc"] + a["b_enc"], a["threshold"]),  # b_dec subtracted
    ])


def test_gemma_scope_embedding_folders_rescale_by_sqrt_d(tmp_path):
    a = planted(2, GEMMA_SHAPES)
    path = "embedding/width_4k/average_l0_6"
    cache = put_repo(tmp_path, G2_REPO, {f"{path}/params.npz": npz_bytes(a)})
    with pytest.raises(HubError, match="reads the token embeddings"):
        load_pretrained(G2_REPO, path, cache_dir=cache)
    # Told where to read (as a caller could be), the embedding SAE's math shows.
    (sae, _), _ = load_sae(G2_REPO, path, hook="blocks.0.hook_resid_post", cache_dir=cache)
    x = x_ND(3)
    pre = x.astype(np.float64) @ (a["W_enc"] / math.sqrt(D)) + a["b_enc"]
    ref = jump(pre, a["threshold"])
    unscaled = jump(x @ a["W_enc"] + a["b_enc"], a["threshold"])
    check(sae, x, ref, ref @ (a["W_dec"] * math.sqrt(D)) + a["b_dec"], naive_acts=[unscaled])


def test_gemma_scope_sites_from_the_repo_name(tmp_path):
    a = npz_bytes(planted(3, GEMMA_SHAPES))
    for repo, hookpoint, model in (
            ("google/gemma-scope-9b-it-mlp", "layers.1.mlp", "google/gemma-2-9b-it"),
            ("google/gemma-scope-2b-pt-att", "layers.1.attn_z", "google/gemma-2-2b")):
        cache = put_repo(tmp_path / repo.replace("/", "_"), repo, {f"{G2_PATH}/params.npz": a})
        pset = load_pretrained(repo, G2_PATH, cache_dir=cache)
        assert list(pset.saes) == [hookpoint]  # -att: o_proj's input (attn.hook_z)
        assert pset.sources[hookpoint].trained_for == model


def test_npz_with_pickled_objects_is_refused(tmp_path):
    a = planted(4, GEMMA_SHAPES) | {"threshold": np.array([{"x": 1}] * S, dtype=object)}
    cache = put_repo(tmp_path, G2_REPO, {f"{G2_PATH}/params.npz": npz_bytes(a)})
    with pytest.raises(HubError, match=r"not a plain \.npz"):
        load_pretrained(G2_REPO, G2_PATH, cache_dir=cache)


def gemma_3_files(seed=5, path=G3_PATH):
    a = planted(seed, {"w_enc": (D, S), "w_dec": (S, D), "b_enc": (S,), "b_dec": (D,),
                       "threshold": (S,)})
    cfg = {"architecture": "jump_relu", "model_name": "gemma-v3-270m-pt", "width": 16384,
           "hf_hook_point_in": "model.layers.1.output", "l0": 10, "type": "sae"}
    return a, {f"{path}/params.safetensors": st_bytes(to_torch(a)), f"{path}/config.json": cfg}


def test_gemma_scope_2_lower_case_names_and_sizes_from_the_header(tmp_path):
    a, files = gemma_3_files()
    cache = put_repo(tmp_path, G3_REPO, files)
    pset = load_pretrained(G3_REPO, G3_PATH, cache_dir=cache)  # "width_16k": the file has 64
    sae, src = pset.saes["layers.1"], pset.sources["layers.1"]
    assert (src.format, sae.cfg.d_in, sae.cfg.d_sae) == ("gemma_3", D, S)
    assert sae.cfg.model_name == "google/gemma-3-270m" and not sae.cfg.apply_b_dec_to_input
    x = x_ND(6)
    pre = x.astype(np.float64) @ a["w_enc"] + a["b_enc"]
    ref = jump(pre, a["threshold"])
    check(sae, x, ref, ref @ a["w_dec"] + a["b_dec"], naive_acts=[
        np.maximum(pre, 0), jump((x - a["b_dec"]) @ a["w_enc"] + a["b_enc"], a["threshold"])])
    # No needless copies: the encoder is a view of the stored (d_in, d_sae) matrix.
    assert sae.W_enc.is_contiguous() and sae.W_dec.is_contiguous()


def test_gemma_scope_2_sites_from_the_path(tmp_path):
    for path, expect in (("mlp_out_all/layer_1_width_16k_l0_big", "layers.1.mlp"),
                         ("attn_out/layer_1_width_16k_l0_big", "layers.1.attn_z")):
        _, files = gemma_3_files(path=path)
        cache = put_repo(tmp_path / path.replace("/", "_"), G3_REPO, files)
        assert list(load_pretrained(G3_REPO, path, cache_dir=cache).saes) == [expect]


def test_gemma_scope_2_wrong_shapes_are_clear_errors(tmp_path):
    a, files = gemma_3_files()
    a["threshold"] = a["threshold"][:10]
    files[f"{G3_PATH}/params.safetensors"] = st_bytes(to_torch(a))
    cache = put_repo(tmp_path, G3_REPO, files)
    with pytest.raises(HubError, match=r"tensor 'threshold' has shape \(10,\), expected \(64,\)"):
        load_pretrained(G3_REPO, G3_PATH, cache_dir=cache)
