"""Transcoder layouts in hand-built Hub caches (file, tensor and config names as on the
Hub) load into transcoders whose prediction equals a plain numpy version of each suite's
math; a naive reading (threshold ignored, skip ignored or transposed, b_dec subtracted)
differs, so the test proves the special math is used. Cross-layer transcoders are refused."""

import numpy as np
import pytest
import torch

from sae_core.hooks import run_captured
from sae_core.hub.fetch import HubError
from sae_core.hub.formats import CONVERTERS
from sae_core.hub.load import load_pretrained, load_sae
from sae_core.hub.transcoders import CLT_REFUSAL
from tests.hub.suite_files import (
    D,
    S,
    jump,
    npz_bytes,
    planted,
    put_repo,
    st_bytes,
    to_torch,
    topk,
    x_ND,
)

GEMMA_SCOPE = "google/gemma-scope-2b-pt-transcoders"
GEMMA_SCOPE_2 = "google/gemma-scope-2-270m-pt"
ELEUTHER = "EleutherAI/skip-transcoder-Llama-3.2-1B-131k"


def predict(tc, x):
    with torch.no_grad():
        return tc(torch.from_numpy(x)).x_hat.numpy()


def close(a, b):
    return np.allclose(a, b, rtol=1e-4, atol=1e-4)


def test_gemma_scope_transcoder_npz(tmp_path):
    t = planted(1, {"W_enc": (D, S), "W_dec": (S, D), "b_enc": (S,), "b_dec": (D,),
                    "threshold": (S,)})
    path = "layer_2/width_16k/average_l0_7"
    cache = put_repo(tmp_path, GEMMA_SCOPE, {f"{path}/params.npz": npz_bytes(t)})
    for layout in ("gemma_2_transcoder", None):  # the release's layout, or told by the files
        (tc, norm), _ = load_sae(GEMMA_SCOPE, path, layout=layout, cache_dir=cache)
        assert (tc.cfg.hookpoint, tc.cfg.hookpoint_in) == ("layers.2.mlp", "layers.2.mlp_in")
        assert tc.cfg.model_name == "google/gemma-2-2b" and norm == "none" and not tc.cfg.skip
    x = x_ND()
    pre = x @ t["W_enc"] + t["b_enc"]
    want = jump(pre, t["threshold"]) @ t["W_dec"] + t["b_dec"]
    assert close(predict(tc, x), want)
    assert not close(np.maximum(pre, 0) @ t["W_dec"] + t["b_dec"], want)  # threshold ignored
    pre_shifted = (x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]
    assert not close(jump(pre_shifted, t["threshold"]) @ t["W_dec"] + t["b_dec"], want)


def _gemma_scope_2(seed, *, affine, d_out=D):
    shapes = {"w_enc": (D, S), "w_dec": (S, d_out), "b_enc": (S,), "b_dec": (d_out,),
              "threshold": (S,)}
    return planted(seed, shapes | ({"affine_skip_connection": (D, d_out)} if affine else {}))


def test_gemma_scope_2_affine_transcoder(tmp_path):
    t = _gemma_scope_2(2, affine=True)
    path = "transcoder/layer_1_width_16k_l0_small_affine"
    cfg = {"architecture": "jump_relu", "model_name": "gemma-v3-270m-pt",
           "hf_hook_point_in": "model.layers.1.pre_feedforward_layernorm.output",
           "hf_hook_point_out": "model.layers.1.post_feedforward_layernorm.output",
           "affine_connection": True}
    cache = put_repo(tmp_path, GEMMA_SCOPE_2, {
        f"{path}/params.safetensors": st_bytes(to_torch(t)), f"{path}/config.json": cfg})
    # SAELens lists Gemma Scope 2 transcoders under `gemma_3`: routed to the transcoder
    (tc, _), _ = load_sae(GEMMA_SCOPE_2, path, layout="gemma_3", cache_dir=cache)
    assert (tc.cfg.hookpoint, tc.cfg.hookpoint_in, tc.cfg.skip) == (
        "layers.1.mlp", "layers.1.mlp_in", True)
    assert tc.cfg.model_name == "google/gemma-3-270m"
    x = x_ND()
    feats = jump(x @ t["w_enc"] + t["b_enc"], t["threshold"]) @ t["w_dec"] + t["b_dec"]
    want = feats + x @ t["affine_skip_connection"]
    assert close(predict(tc, x), want)
    assert not close(feats, want)  # skip ignored
    assert not close(feats + x @ t["affine_skip_connection"].T, want)  # skip transposed
    assert close(tc.decode(tc.encode(torch.from_numpy(x))).detach().numpy(), feats)


def test_gemma_scope_2_plain_transcoder_without_config(tmp_path):
    t = _gemma_scope_2(3, affine=False)
    path = "transcoder_all/layer_0_width_16k_l0_big"
    cache = put_repo(tmp_path, GEMMA_SCOPE_2, {f"{path}/params.safetensors": st_bytes(to_torch(t))})
    (tc, _), _ = load_sae(GEMMA_SCOPE_2, path, layout="gemma_3_transcoder", cache_dir=cache)
    assert tc.cfg.hookpoint == "layers.0.mlp" and not tc.cfg.skip
    x = x_ND()
    want = jump(x @ t["w_enc"] + t["b_enc"], t["threshold"]) @ t["w_dec"] + t["b_dec"]
    assert close(predict(tc, x), want)


def test_an_affine_folder_without_its_skip_tensor_is_refused(tmp_path):
    t = _gemma_scope_2(4, affine=False)
    path = "transcoder/layer_1_width_16k_l0_small_affine"
    cache = put_repo(tmp_path, GEMMA_SCOPE_2, {f"{path}/params.safetensors": st_bytes(to_torch(t))})
    with pytest.raises(HubError, match="affine"):
        load_sae(GEMMA_SCOPE_2, path, layout="gemma_3", cache_dir=cache)


def _eleuther_files(t, *, skip=True):
    cfg = {"activation": "topk", "expansion_factor": 32, "normalize_decoder": True,
           "num_latents": S, "k": 5, "multi_topk": False, "skip_connection": skip,
           "transcode": True, "d_in": D}
    names = {"enc": "encoder.weight", "b_enc": "encoder.bias", "W_dec": "W_dec",
             "b_dec": "b_dec", "W_skip": "W_skip"}
    tensors = {names[k]: v for k, v in to_torch(t).items()}
    return {"layers.1.mlp/cfg.json": cfg, "layers.1.mlp/sae.safetensors": st_bytes(tensors),
            "config.json": {"model": "meta-llama/Llama-3.2-1B", "transcode": True}}


def test_eleutherai_skip_transcoder_loads_onto_a_model_and_encodes_the_mlp_input(tmp_path, lm):
    t = planted(5, {"enc": (S, D), "b_enc": (S,), "W_dec": (S, D), "b_dec": (D,),
                    "W_skip": (D, D)})
    cache = put_repo(tmp_path, ELEUTHER, _eleuther_files(t))
    pset = load_pretrained(ELEUTHER, "layers.1.mlp", lm=lm, cache_dir=cache)
    tc = pset.saes["layers.1.mlp"]
    assert list(pset.saes) == ["layers.1.mlp"] and tc.cfg.hookpoint_in == "layers.1.mlp_in"
    assert tc.cfg.skip and tc.cfg.k == 5 and tc.cfg.model_name == "meta-llama/Llama-3.2-1B"
    x = x_ND()
    feats = topk(x @ t["enc"].T + t["b_enc"], 5) @ t["W_dec"] + t["b_dec"]
    want = feats + x @ t["W_skip"].T
    assert close(predict(tc, x), want)
    assert not close(feats, want)  # skip ignored
    shifted = topk((x - t["b_dec"]) @ t["enc"].T + t["b_enc"], 5) @ t["W_dec"] + t["b_dec"]
    assert not close(shifted + x @ t["W_skip"].T, want)  # b_dec wrongly subtracted
    # on the model, the features come from the MLP's input
    ids = torch.randint(3, 16, (1, 8), generator=torch.Generator().manual_seed(0))
    x_in = run_captured(lm, ids, ["layers.1.mlp_in"], bf16=False)["layers.1.mlp_in"][0]
    with torch.no_grad():
        acts = tc.encode(x_in).numpy()
    assert close(acts, topk(x_in.numpy() @ t["enc"].T + t["b_enc"], 5))


def test_mwhanna_transcoder_single_file(tmp_path):
    t = planted(6, {"W_enc": (S, D), "b_enc": (S,), "W_dec": (S, D), "b_dec": (D,)})
    repo = "mwhanna/qwen3-0.6b-transcoders-lowl0"
    cache = put_repo(tmp_path, repo, {"layer_3.safetensors": st_bytes(to_torch(t))})
    (tc, _), _ = load_sae(repo, "layer_3.safetensors", layout="mwhanna_transcoder",
                          cache_dir=cache, trained_for="Qwen/Qwen3-0.6B")
    assert (tc.cfg.hookpoint, tc.cfg.architecture) == ("layers.3.mlp", "relu")
    x = x_ND()
    want = np.maximum(x @ t["W_enc"].T + t["b_enc"], 0) @ t["W_dec"] + t["b_dec"]
    assert close(predict(tc, x), want)


def test_cross_layer_transcoders_are_refused(tmp_path):
    t = _gemma_scope_2(7, affine=False)
    path = "clt/layer_1_width_16k_l0_small"
    cache = put_repo(tmp_path, GEMMA_SCOPE_2, {f"{path}/params.safetensors": st_bytes(to_torch(t))})
    with pytest.raises(HubError, match=CLT_REFUSAL):
        load_sae(GEMMA_SCOPE_2, path, layout="gemma_3", cache_dir=cache)
    with pytest.raises(HubError, match="cross-layer transcoders are not supported"):
        CONVERTERS["mntss_clt_layer_transcoder"]({}, {}, _where("mntss/clt-gemma-2-2b-2.5M", "0"))


def test_unknown_tensors_are_refused_not_ignored(tmp_path):
    t = planted(8, {"W_enc": (D, S), "W_dec": (S, D), "b_enc": (S,), "b_dec": (D,),
                    "threshold": (S,), "W_skip": (D, D)})
    path = "layer_2/width_16k/average_l0_7"
    cache = put_repo(tmp_path, GEMMA_SCOPE, {f"{path}/params.npz": npz_bytes(t)})
    with pytest.raises(HubError, match=r"unexpected tensors.*W_skip"):
        load_sae(GEMMA_SCOPE, path, layout="gemma_2_transcoder", cache_dir=cache)


def _where(repo, path):
    from sae_core.hub.convert import Where
    return Where(repo, path)
