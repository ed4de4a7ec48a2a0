"""SAELens and sparsify files convert into SAEs whose encodings equal plain torch formulas
on the raw tensors."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save as st_bytes

from sae_core.config import SaeConfig
from sae_core.hooks import run_captured
from sae_core.hub.fetch import HubError
from sae_core.hub.formats import hookpoint_of
from sae_core.hub.load import load_pretrained
from sae_core.sae import Sae
from tests.hub.repos import REV, D, S, put_repo, raw_saelens, saelens_repo, v6_cfg


def hidden(lm, layer):
    """Reference input: HF hidden_states[layer + 1], i.e. block `layer`'s output."""
    ids = torch.arange(3, 3 + 13).repeat(2, 1)
    with torch.no_grad():
        return ids, lm.model(ids, output_hidden_states=True).hidden_states[layer + 1][:, 1:]


def ours(lm, ids, sae):
    x = run_captured(lm, ids, [sae.cfg.hookpoint], bf16=False)[sae.cfg.hookpoint][:, 1:]
    return sae.encode(x.reshape(-1, D))


def dense_topk(pre, k):
    vals, idx = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter_(-1, idx, vals.relu())


@pytest.mark.parametrize("case", ["standard", "topk", "jumprelu", "no_b_dec_in", "pre6_topk"])
def test_saelens_encodings_match_reference(tmp_path, lm, case):
    t = raw_saelens(threshold=case == "jumprelu")
    cfg = {"standard": v6_cfg(), "topk": v6_cfg("topk", k=5), "jumprelu": v6_cfg("jumprelu"),
           "no_b_dec_in": v6_cfg() | {"apply_b_dec_to_input": False},
           "pre6_topk": {"d_in": D, "d_sae": S, "hook_point": "blocks.2.hook_resid_pre",
                         "model_name": "tiny-llama", "activation_fn_str": "topk",
                         "activation_fn_kwargs": {"k": 4}, "normalize_activations": False,
                         "sae_lens_training_version": "3.0.0"}}[case]
    cache = put_repo(tmp_path, "org/tiny-saes", {
        "sae/cfg.json": cfg, "sae/sae_weights.safetensors": st_bytes(t)})
    pset = load_pretrained("org/tiny-saes", "sae", lm=lm, cache_dir=cache)
    assert list(pset.saes) == ["layers.1"] and pset.warnings == () and pset.revision == REV
    ids, x = hidden(lm, 1)  # blocks.2.hook_resid_pre is block 1's output too
    x = x.reshape(-1, D)
    b_in = 0 if case == "no_b_dec_in" else t["b_dec"]
    pre = (x - b_in) @ t["W_enc"] + t["b_enc"]
    if case == "jumprelu":
        ref = pre.relu() * (pre > t["threshold"])
    else:
        ref = {"topk": dense_topk(pre, 5), "pre6_topk": dense_topk(pre, 4)}.get(case, pre.relu())
    sae = pset.saes["layers.1"]
    acts = ours(lm, ids, sae)
    torch.testing.assert_close(acts, ref, rtol=1e-5, atol=1e-5)
    assert (acts > 0).sum() > 0 and (acts == 0).sum() > 0
    torch.testing.assert_close(sae.decode(acts), ref @ t["W_dec"] + t["b_dec"],
                               rtol=1e-5, atol=1e-5)


def test_sparsify_module_outputs_with_run_config(tmp_path, lm):
    g = torch.Generator().manual_seed(1)
    files = {"config.json": {"model": "tiny-llama", "batch_size": 8}}
    raw = {}
    for h in ("layers.1", "layers.0.mlp"):
        raw[h] = {"encoder.weight": torch.randn(S, D, generator=g) / 4,
                  "encoder.bias": torch.randn(S, generator=g) / 2,
                  "W_dec": torch.randn(S, D, generator=g), "b_dec": torch.randn(D, generator=g)}
        files[f"{h}/cfg.json"] = {"activation": "topk", "expansion_factor": 2, "k": 6,
                                  "normalize_decoder": True, "num_latents": S,
                                  "multi_topk": False, "skip_connection": False, "d_in": D}
        files[f"{h}/sae.safetensors"] = st_bytes(raw[h])
    cache = put_repo(tmp_path, "EleutherAI/sae-tiny", files)
    pset = load_pretrained("EleutherAI/sae-tiny", "layers.1, layers.0.mlp", lm=lm,
                           cache_dir=cache)
    assert list(pset.saes) == ["layers.0.mlp", "layers.1"] and pset.warnings == ()
    assert {s.format for s in pset.sources.values()} == {"sparsify"}
    ids, x_BLD = hidden(lm, 1)  # sparsify `layers.1` = hidden_states[2]
    r = raw["layers.1"]
    ref = dense_topk(F.relu(F.linear(x_BLD.reshape(-1, D) - r["b_dec"], r["encoder.weight"],
                                     r["encoder.bias"])), 6)
    torch.testing.assert_close(ours(lm, ids, pset.saes["layers.1"]), ref, rtol=1e-5, atol=1e-5)
    # The MLP hookpoint reads block 0's MLP output: take it with a plain torch hook.
    captured = {}
    handle = lm.layers[0].mlp.register_forward_hook(lambda m, i, o: captured.setdefault("y", o))
    with torch.no_grad():
        lm.model(ids)
    handle.remove()
    r = raw["layers.0.mlp"]
    y = captured["y"][:, 1:].reshape(-1, D)
    ref = dense_topk(F.relu(F.linear(y - r["b_dec"], r["encoder.weight"], r["encoder.bias"])), 6)
    torch.testing.assert_close(ours(lm, ids, pset.saes["layers.0.mlp"]), ref,
                               rtol=1e-5, atol=1e-5)


def test_hook_names_map_to_module_outputs():
    assert hookpoint_of("blocks.4.hook_resid_post") == "layers.4"
    assert hookpoint_of("blocks.4.hook_resid_pre") == "layers.3"
    assert hookpoint_of("blocks.4.hook_mlp_out") == "layers.4.mlp"
    assert hookpoint_of("layers.6.mlp") == "layers.6.mlp"
    assert hookpoint_of("model.layers.6") == "layers.6" == hookpoint_of("h.6")
    with pytest.raises(HubError, match="token embeddings"):
        hookpoint_of("blocks.0.hook_resid_pre")
    assert hookpoint_of("blocks.3.attn.hook_z") == "layers.3.attn_z"  # o_proj's input
    assert hookpoint_of("blocks.3.hook_resid_mid") == "layers.3.resid_mid"
    with pytest.raises(HubError, match="load it as a transcoder"):
        hookpoint_of("blocks.3.hook_mlp_in")
    with pytest.raises(HubError, match="no hookpoint here"):
        hookpoint_of("blocks.3.attn.hook_q")


@pytest.mark.parametrize("bad, match", [
    ({"architecture": "gated"}, "unsupported architecture 'gated'"),
    ({"architecture": "topk"}, "topk SAE without k"),
    ({"normalize_activations": "layer_norm"}, "normalize_activations='layer_norm'"),
    ({"d_sae": 63}, "tensor 'W_enc' has shape \\(32, 64\\), expected \\(32, 63\\)"),
    ({"metadata": {"hook_name": "blocks.0.hook_resid_pre"}}, "token embeddings"),
    ({"metadata": {"hook_name": "blocks.1.attn.hook_z", "hook_head_index": 3}}, "per-head"),
    ({"activation_fn": "tanh-relu"}, "activation 'tanh-relu'"),
])
def test_bad_configs_are_clear_errors(tmp_path, lm, bad, match):
    cache = saelens_repo(tmp_path, cfg=v6_cfg() | bad)
    with pytest.raises(HubError, match=match):
        load_pretrained("org/tiny-saes", "sae", lm=lm, cache_dir=cache)


def test_input_normalization_is_folded(tmp_path, lm):
    t = raw_saelens()
    cache = saelens_repo(tmp_path, cfg=v6_cfg(normalize_activations="expected_average_only_in"),
                         tensors=t)
    pset = load_pretrained("org/tiny-saes", "sae", lm=lm, cache_dir=cache)
    assert pset.needs_scale == ("layers.1",)
    pset = load_pretrained("org/tiny-saes", "sae", lm=lm, cache_dir=cache,
                           norm_scaling_factor=2.5)
    assert pset.needs_scale == ()
    x = torch.randn(20, D)
    pre = (2.5 * x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]  # trained on inputs scaled by 2.5
    sae = pset.saes["layers.1"]
    torch.testing.assert_close(sae.encode(x), pre.relu(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae(x).x_hat, (pre.relu() @ t["W_dec"] + t["b_dec"]) / 2.5,
                               rtol=1e-5, atol=1e-5)


def test_jumprelu_save_load_round_trip_is_bit_identical(tmp_path):
    sae = Sae(SaeConfig(d_in=D, d_sae=S, architecture="jumprelu", hookpoint="layers.2",
                        model_name="tiny-llama", apply_b_dec_to_input=False))
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_()
    sae.save(tmp_path)
    loaded = Sae.load(tmp_path)
    assert loaded.cfg == sae.cfg
    assert json.loads((tmp_path / "cfg.json").read_text())["architecture"] == "jumprelu"
    for (name, a), b in zip(sae.named_parameters(), loaded.parameters(), strict=True):
        assert torch.equal(a, b), name


PRE6_TOPK = {"d_in": D, "d_sae": S, "hook_point": "blocks.2.hook_resid_pre",
             "model_name": "tiny-llama", "activation_fn_str": "topk",
             "activation_fn_kwargs": {"k": 4}, "normalize_activations": False}


@pytest.mark.parametrize("case", ["standard", "topk", "jumprelu", "no_b_dec_in", "pre6_topk"])
def test_sae_load_reads_a_saelens_folder_as_the_hub_converter_does(tmp_path, case):
    """One reader: the same cfg.json and weights give the same config and tensors through
    `Sae.load` and the Hub's SAELens converter."""
    from safetensors.torch import save_file

    from sae_core.hub.convert import Where
    from sae_core.hub.formats import from_saelens

    cfg = {"standard": v6_cfg(), "topk": v6_cfg("topk", k=5), "jumprelu": v6_cfg("jumprelu"),
           "no_b_dec_in": v6_cfg() | {"apply_b_dec_to_input": False},
           "pre6_topk": PRE6_TOPK}[case]
    t = raw_saelens(threshold=case == "jumprelu")
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    save_file(t, tmp_path / "sae_weights.safetensors")
    loaded = Sae.load(tmp_path)
    hub = from_saelens(cfg, t, Where("org/tiny-saes", "sae")).sae
    assert loaded.cfg == hub.cfg
    assert loaded.cfg.hookpoint == "layers.1"  # the TransformerLens hook, mapped
    assert loaded.cfg.k == {"topk": 5, "pre6_topk": 4}.get(case, 32)
    for (name, a), (_, b) in zip(loaded.named_parameters(), hub.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(loaded.W_enc, t["W_enc"]) and torch.equal(loaded.W_dec, t["W_dec"])


@pytest.mark.parametrize(("arch", "skip"), [("relu", False), ("jumprelu", True), ("topk", True)])
def test_the_hub_converter_reads_the_transcoders_we_save(tmp_path, arch, skip):
    """A transcoder saved by `Sae.save` converts from the Hub to the same module."""
    from safetensors.torch import load_file

    from sae_core.hub.convert import Where
    from sae_core.hub.formats import from_saelens

    cfg = SaeConfig(d_in=D, d_sae=S, d_out=D + 8, architecture=arch, k=6,
                    hookpoint="layers.1.mlp", hookpoint_in="layers.1.mlp_in", skip=skip,
                    model_name="tiny-llama", apply_b_dec_to_input=False)
    sae = Sae(cfg)
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_()
    sae.save(tmp_path)
    raw = json.loads((tmp_path / "cfg.json").read_text())
    got = from_saelens(raw, load_file(tmp_path / "sae_weights.safetensors"),
                       Where("org/atlas", "layers.1.mlp")).sae
    assert got.cfg == cfg == Sae.load(tmp_path).cfg
    for (name, a), (_, b) in zip(sae.named_parameters(), got.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    # without our metadata the TransformerLens hooks say the same sites
    del raw["metadata"]["sae_atlas_hookpoint"], raw["metadata"]["sae_atlas_hookpoint_in"]
    assert from_saelens(raw, load_file(tmp_path / "sae_weights.safetensors"),
                        Where("org/atlas", "x")).sae.cfg == cfg
