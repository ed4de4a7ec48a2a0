"""Llama Scope (dataset-norm scale folded into the weights and the scalar threshold) and
its R1-Distill series (log-threshold, not rescaled; the release's scale folded by the
caller) against plain numpy versions of SAELens's math; naive readings differ."""

import math

import numpy as np
import pytest
import torch

from sae_core.hub.fetch import HubError
from sae_core.hub.load import load_pretrained
from tests.hub.suite_files import D, S, jump, planted, put_repo, st_bytes, x_ND
from tests.hub.test_suites import check

LS_REPO, LS_PATH = "fnlp/Llama3_1-8B-Base-LXR-8x", "Llama3_1-8B-Base-L1R-8x"
R1_REPO, R1_PATH = "fnlp/Llama-Scope-R1-Distill", "800M-Slimpajama-0-OpenR1-Math-220k/L1R"
LINEAR = {"encoder.weight": (S, D), "encoder.bias": (S,), "decoder.weight": (D, S),
          "decoder.bias": (D,)}
AVG_NORM, JUMP = 0.8, 0.05


def hyperparams(**kw):
    """hyperparams.json as Llama Scope ships it (lm-saes keys)."""
    return {"d_model": D, "expansion_factor": S // D, "d_sae": S, "act_fn": "jumprelu",
            "jump_relu_threshold": JUMP, "norm_activation": "dataset-wise",
            "dataset_average_activation_norm": {"in": AVG_NORM, "out": AVG_NORM},
            "hook_point_in": "blocks.1.hook_resid_post",
            "hook_point_out": "blocks.1.hook_resid_post", "top_k": 50,
            "apply_decoder_bias_to_pre_encoder": False, "sparsity_include_decoder_norm": True,
            **kw}


def bf16_weights(seed):
    """The planted weights as bf16 tensors (as on the Hub) and as float64 arrays of the very
    same values (for the reference)."""
    raw = {k: torch.from_numpy(v).bfloat16() for k, v in planted(seed, LINEAR).items()}
    return raw, {k: v.double().numpy() for k, v in raw.items()}


def test_llama_scope_folds_the_dataset_norm_into_weights_and_threshold(tmp_path):
    raw, a = bf16_weights(11)
    cache = put_repo(tmp_path, LS_REPO, {
        f"{LS_PATH}/hyperparams.json": hyperparams(),
        f"{LS_PATH}/checkpoints/final.safetensors": st_bytes(raw)})
    pset = load_pretrained(LS_REPO, LS_PATH, cache_dir=cache)
    sae, src = pset.saes["layers.1"], pset.sources["layers.1"]
    assert src.format == "llama_scope" and pset.needs_scale == ()
    s = math.sqrt(D) / AVG_NORM
    assert sae.metadata["norm_scaling_factor"] == pytest.approx(s)
    x = x_ND(12) / 4
    # SAELens: W_enc * s, W_dec / s, b_dec / s, threshold = jump_relu_threshold * s.
    pre = x @ (a["encoder.weight"].T * s) + a["encoder.bias"]
    ref = jump(pre, JUMP * s)
    x_hat = ref @ (a["decoder.weight"].T / s) + a["decoder.bias"] / s
    plain = x @ a["encoder.weight"].T + a["encoder.bias"]  # scale not folded
    check(sae, x, ref, x_hat, naive_acts=[
        jump(plain, JUMP), jump(pre, JUMP),  # threshold not scaled
        jump((x - a["decoder.bias"] / s) @ (a["encoder.weight"].T * s)
             + a["encoder.bias"], JUMP * s)])  # b_dec subtracted


def test_llama_scope_needs_its_norm(tmp_path):
    raw, _ = bf16_weights(13)
    cfg = hyperparams()
    del cfg["dataset_average_activation_norm"]
    cache = put_repo(tmp_path, LS_REPO, {
        f"{LS_PATH}/hyperparams.json": cfg,
        f"{LS_PATH}/checkpoints/final.safetensors": st_bytes(raw)})
    with pytest.raises(HubError, match="no dataset_average_activation_norm"):
        load_pretrained(LS_REPO, LS_PATH, cache_dir=cache)


def r1_repo(tmp_path, seed=14):
    a = planted(seed, LINEAR)
    a["log_jumprelu_threshold"] = np.log(planted(seed + 1, {"threshold": (S,)})["threshold"])
    cache = put_repo(tmp_path, R1_REPO, {
        f"{R1_PATH}/config.json": {"d_model": D, "expansion_factor": S // D, "act_fn":
                                   "jumprelu", "hook_point_in": "blocks.1.hook_resid_post",
                                   "hook_point_out": "blocks.1.hook_resid_post",
                                   "norm_activation": "dataset-wise", "top_k": 50},
        f"{R1_PATH}/sae_weights.safetensors": st_bytes(
            {k: torch.from_numpy(v) for k, v in a.items()})})
    return cache, {k: v.astype(np.float64) for k, v in a.items()}


def test_llama_scope_r1_distill_log_threshold_and_the_callers_scale(tmp_path):
    cache, a = r1_repo(tmp_path)
    pset = load_pretrained(R1_REPO, R1_PATH, cache_dir=cache)
    assert pset.needs_scale == ("layers.1",)  # SAELens folds the release's scale
    assert pset.sources["layers.1"].format == "llama_scope_r1_distill"
    s = 2.5
    pset = load_pretrained(R1_REPO, R1_PATH, cache_dir=cache, norm_scaling_factor={R1_PATH: s})
    assert pset.needs_scale == ()
    x = x_ND(15) / 4
    thr = np.exp(a["log_jumprelu_threshold"])  # not rescaled
    pre = x @ (a["encoder.weight"].T * s) + a["encoder.bias"]
    ref = jump(pre, thr)
    x_hat = ref @ (a["decoder.weight"].T / s) + a["decoder.bias"] / s
    check(pset.saes["layers.1"], x, ref, x_hat, naive_acts=[
        jump(pre, a["log_jumprelu_threshold"]),  # log read as the threshold
        jump(pre, thr * s),  # threshold rescaled as Llama Scope's
        jump(x @ a["encoder.weight"].T + a["encoder.bias"], thr)])  # scale not folded
