"""The suites that ship torch pickles (dictionary_learning, Qwen Scope, Goodfire,
qresearch) load through `torch.load(weights_only=True)` only, encode and decode as plain
numpy versions of each suite's math (naive readings differ), and anything but named tensors
is refused; public mode opens pickles only for allow-listed releases."""

import numpy as np
import pytest
import torch

from sae_core.hub.fetch import HubError
from sae_core.hub.load import load_pretrained
from sae_core.hub.torch_weights import PICKLE_ALLOW_LIST, check_pickle_policy
from tests.hub.suite_files import D, S, jump, planted, pt_bytes, put_repo, topk, x_ND
from tests.hub.test_suites import check

DL_REPO = "canrager/saebench_gemma-2-2b_width-2pow12_date-1109"
DL_PATH = "gemma-2-2b_topk_width-2pow12_date-1109/resid_post_layer_1/trainer_0"
QWEN_REPO = "Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_6"
LINEAR = {"encoder.weight": (S, D), "encoder.bias": (S,), "decoder.weight": (D, S)}
NAMED = {"W_enc": (D, S), "b_enc": (S,), "W_dec": (S, D), "b_dec": (D,)}
DL_CASES = {  # class -> (stored tensors, name of b_dec, subtracted from the input)
    "AutoEncoder": (LINEAR | {"bias": (D,)}, "bias", True),
    "AutoEncoderTopK": (LINEAR | {"b_dec": (D,)}, "b_dec", True),
    "BatchTopKSAE": (NAMED, "b_dec", True),
    "JumpReluAutoEncoder": (NAMED | {"threshold": (S,)}, "b_dec", False),
}


def tensors(a: dict) -> dict:
    return {k: torch.from_numpy(np.asarray(v)) for k, v in a.items()}


def dl_repo(tmp_path, cls, a):
    trainer = {"dict_class": cls, "activation_dim": D, "dict_size": S, "k": 5, "layer": 1,
               "lm_name": "google/gemma-2-2b", "submodule_name": "resid_post_layer_1"}
    return put_repo(tmp_path, DL_REPO, {
        f"{DL_PATH}/config.json": {"trainer": trainer, "buffer": {"ctx_len": 128}},
        f"{DL_PATH}/ae.pt": pt_bytes(tensors(a))})


@pytest.mark.parametrize("cls", DL_CASES)
def test_dictionary_learning_classes(tmp_path, cls):
    shapes, b_name, subtracted = DL_CASES[cls]
    a = planted(21, shapes)
    if cls == "AutoEncoderTopK":  # saved with a k and a threshold it does not use
        a |= {"k": np.array(5), "threshold": np.array(-1.0, np.float32)}
    if cls == "BatchTopKSAE":  # one threshold for all latents
        a |= {"k": np.array(5), "threshold": np.array(0.3, np.float32)}
    pset = load_pretrained(DL_REPO, DL_PATH, cache_dir=dl_repo(tmp_path, cls, a))
    sae = pset.saes["layers.1"]
    assert pset.sources["layers.1"].format == "dictionary_learning_1"
    linear = "encoder.weight" in a
    w_enc = a["encoder.weight"].T if linear else a["W_enc"]
    w_dec = a["decoder.weight"].T if linear else a["W_dec"]
    b_enc, b_dec = a["encoder.bias" if linear else "b_enc"], a[b_name]
    x = x_ND(23).astype(np.float64)

    def encode(b_in, with_threshold=True):
        pre = (x - b_in) @ w_enc + b_enc
        if cls == "AutoEncoder":
            return np.maximum(pre, 0)
        if cls == "AutoEncoderTopK":
            return topk(pre, 5)
        return jump(pre, a["threshold"]) if with_threshold else np.maximum(pre, 0)

    ref = encode(b_dec if subtracted else 0)
    naive = [encode(0 if subtracted else b_dec)]  # b_dec use flipped
    if cls in ("BatchTopKSAE", "JumpReluAutoEncoder"):
        naive.append(encode(b_dec if subtracted else 0, with_threshold=False))
    check(sae, x.astype(np.float32), ref, ref @ w_dec + b_dec, naive_acts=naive)


def test_dictionary_learning_gated_is_refused(tmp_path):
    cache = dl_repo(tmp_path, "GatedAutoEncoder", planted(24, NAMED))
    with pytest.raises(HubError, match="'GatedAutoEncoder' is not supported"):
        load_pretrained(DL_REPO, DL_PATH, cache_dir=cache)


def qwen_repo(tmp_path, a, repo=QWEN_REPO):
    return put_repo(tmp_path, repo, {"layer1.sae.pt": pt_bytes(tensors(a))})


def test_qwen_scope_topk_k_from_the_repo_name_no_b_dec_subtraction(tmp_path):
    a = planted(31, {"W_enc": (S, D), "W_dec": (D, S), "b_enc": (S,), "b_dec": (D,)})
    pset = load_pretrained(QWEN_REPO, "layer1.sae.pt", cache_dir=qwen_repo(tmp_path, a))
    sae = pset.saes["layers.1"]
    assert (sae.cfg.k, sae.cfg.d_sae) == (6, S)  # "W32K" in the name; the file has 64
    assert sae.cfg.model_name == "Qwen/Qwen3-1.7B-Base"
    assert pset.sources["layers.1"].format == "qwen_scope"
    x = x_ND(32).astype(np.float64)
    ref = topk(x @ a["W_enc"].T + a["b_enc"], 6)
    check(sae, x.astype(np.float32), ref, ref @ a["W_dec"].T + a["b_dec"], naive_acts=[
        topk((x - a["b_dec"]) @ a["W_enc"].T + a["b_enc"], 6)])


def test_qwen_scope_k_from_the_file_and_transposition(tmp_path):
    # Square (S = D): read in SAELens's orientation, the same file would load, wrongly.
    a = planted(33, {"W_enc": (D, D), "W_dec": (D, D), "b_enc": (D,), "b_dec": (D,)})
    pset = load_pretrained(QWEN_REPO, "layer1.sae.pt",
                           cache_dir=qwen_repo(tmp_path, a | {"k": np.array(4)}))
    sae = pset.saes["layers.1"]
    assert sae.cfg.k == 4
    x = x_ND(34).astype(np.float64)
    ref = topk(x @ a["W_enc"].T + a["b_enc"], 4)
    check(sae, x.astype(np.float32), ref, ref @ a["W_dec"].T + a["b_dec"],
          naive_acts=[topk(x @ a["W_enc"] + a["b_enc"], 4)])


@pytest.mark.parametrize("repo, path, prefix", [
    ("Goodfire/Llama-3.1-8B-Instruct-SAE-l19", "Llama-3.1-8B-Instruct-SAE-l19.pth",
     "encoder_linear"),
    ("qresearch/DeepSeek-R1-Distill-Llama-8B-SAE-l19", "DeepSeek-R1-Distill-Llama-8B-SAE-l19.pt",
     "encoder"),
])
def test_goodfire_and_qresearch_relu_without_b_dec_subtraction(tmp_path, repo, path, prefix):
    dec = prefix.replace("encoder", "decoder")
    a = planted(41, {f"{prefix}.weight": (S, D), f"{prefix}.bias": (S,),
                     f"{dec}.weight": (D, S), f"{dec}.bias": (D,)})
    cache = put_repo(tmp_path, repo, {path: pt_bytes(tensors(a))})
    pset = load_pretrained(repo, path, cache_dir=cache)
    assert list(pset.saes) == ["layers.19"]
    assert pset.sources["layers.19"].format == ("goodfire" if "Good" in repo else "deepseek_r1")
    x = x_ND(42).astype(np.float64)
    w_enc, b_enc = a[f"{prefix}.weight"].T, a[f"{prefix}.bias"]
    ref = np.maximum(x @ w_enc + b_enc, 0)
    check(pset.saes["layers.19"], x.astype(np.float32), ref,
          ref @ a[f"{dec}.weight"].T + a[f"{dec}.bias"],
          naive_acts=[np.maximum((x - a[f"{dec}.bias"]) @ w_enc + b_enc, 0)])


class Payload:
    """An object whose unpickling would run code."""

    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_pickles_with_objects_are_refused_unrun(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = tensors(planted(51, {"W_enc": (S, D), "W_dec": (D, S), "b_enc": (S,), "b_dec": (D,)}))
    for i, bad in enumerate([a | {"k": Payload()}, {"weights": a, "note": {1, 2}}, [1, 2]]):
        cache = put_repo(tmp_path / str(i), QWEN_REPO, {"layer1.sae.pt": pt_bytes(bad)})
        with pytest.raises(HubError, match=r"weights_only|dict of at most|named tensors"):
            load_pretrained(QWEN_REPO, "layer1.sae.pt", cache_dir=cache)
    assert not (tmp_path / "PWNED").exists()


def test_wrong_shapes_are_clear_errors(tmp_path):
    a = planted(52, {"W_enc": (S, D), "W_dec": (S, D), "b_enc": (S,), "b_dec": (D,)})
    with pytest.raises(HubError, match=r"tensor 'W_dec' has shape \(64, 32\), expected "
                                       r"\(32, 64\)"):
        load_pretrained(QWEN_REPO, "layer1.sae.pt", cache_dir=qwen_repo(tmp_path, a))


def test_public_mode_opens_pickles_only_for_allow_listed_releases(tmp_path):
    a = planted(53, {"W_enc": (S, D), "W_dec": (D, S), "b_enc": (S,), "b_dec": (D,)})
    cache = qwen_repo(tmp_path, a)
    with pytest.raises(HubError, match=r"torch pickles .* public demo opens pickles only"):
        load_pretrained(QWEN_REPO, "layer1.sae.pt", cache_dir=cache, public=True)
    assert load_pretrained(QWEN_REPO, "layer1.sae.pt", cache_dir=cache).saes
    check_pickle_policy("qwen_scope", sorted(PICKLE_ALLOW_LIST)[0], public=True)
    check_pickle_policy("gemma_3", None, public=True)  # safetensors: nothing to refuse
    with pytest.raises(HubError):
        check_pickle_policy("goodfire", "goodfire-llama-3.1-8b-instruct", public=True)
