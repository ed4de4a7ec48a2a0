"""The sites attention SAEs read: `layers.N.attn_z` (the input of the attention's output
projection, TransformerLens `attn.hook_z` flattened head-major) and `layers.N.resid_mid`
(the residual stream between attention and MLP), on tiny random models of each family, each
checked against what the model computes another way: z times o_proj's weight is the
attention output, zeroing one value head zeroes exactly its slice of z, the residual sum of
the block, a plain FVU, and steered generations against HF's `generate`."""

import copy

import pytest
import torch
from torch import nn

from sae_core.activations import keep_mask
from sae_core.atlas.evaluate import ce_per_window, reconstruction_stats
from sae_core.config import SaeConfig
from sae_core.hooks import edit_output, hooks_left, run_captured
from sae_core.norms import residual_norms
from sae_core.sae import Sae
from sae_core.steer.edits import FeatureSteer, Steering
from sae_core.steer.generation import GenConfig, generate, prompt_ids
from sae_core.sublayers import POST_NORMS
from tests.models.families import FAMILIES, N_LAYERS, SLIDING, family_lm

ATOL = 1e-5
WIDE_HEADS = {"gemma2", "gemma3", "qwen3"}
"""Families whose heads x head_dim differs from d_model here (head_dim 16: 64 against 32),
as in real Gemma models."""


def _lm(name: str):
    if name not in WIDE_HEADS:
        return family_lm(name)
    saved = FAMILIES[name].config
    config = copy.deepcopy(saved)
    config.head_dim = 16
    FAMILIES[name] = type(FAMILIES[name])(config, FAMILIES[name].pre_mlp_norm,
                                          FAMILIES[name].parallel)
    try:
        return family_lm(name)
    finally:
        FAMILIES[name] = type(FAMILIES[name])(saved, FAMILIES[name].pre_mlp_norm,
                                              FAMILIES[name].parallel)


@pytest.fixture(scope="module", params=list(FAMILIES))
def fam(request):
    return request.param, _lm(request.param)


def _ids(n: int = 3 * SLIDING, batch: int = 2) -> torch.Tensor:
    return torch.randint(3, 16, (batch, n), generator=torch.Generator().manual_seed(1))


def _project(proj: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """o_proj(z) written out: z @ W.T (+ b) for nn.Linear, z @ W + b for gpt2's Conv1D."""
    w = proj.weight.T if isinstance(proj, nn.Linear) else proj.weight
    return z @ w + (proj.bias if proj.bias is not None else 0)


def _post_norm(lm, layer: int):
    block = lm.layers[layer]
    return getattr(block, POST_NORMS["attn"]) if hasattr(block, POST_NORMS["mlp"]) else None


def test_attn_z_times_o_proj_is_the_attention_output(fam):
    """attn_z is n_heads x head_dim wide (lm.width_of), and z through the projection's weight
    (and gemma's post-attention norm) is `layers.N.attn`, what attention adds to the stream."""
    name, lm = fam
    cfg = lm.model.config
    heads = getattr(cfg, "num_attention_heads", None) or cfg.n_head
    head_dim = getattr(cfg, "head_dim", None) or lm.d_model // heads
    hps = [f"layers.{i}{s}" for i in range(N_LAYERS) for s in (".attn_z", ".attn")]
    acts = run_captured(lm, _ids(), hps, bf16=False)
    assert hooks_left(lm) == 0
    for i in range(N_LAYERS):
        z = acts[f"layers.{i}.attn_z"]
        assert z.shape[-1] == heads * head_dim == lm.width_of(f"layers.{i}.attn_z")
        out = _project(lm.module_for(f"layers.{i}.attn_z"), z)
        if (norm := _post_norm(lm, i)) is not None:
            out = norm(out)
        torch.testing.assert_close(out, acts[f"layers.{i}.attn"], atol=ATOL, rtol=0)
    if name in WIDE_HEADS:
        assert heads * head_dim != lm.d_model


@pytest.mark.parametrize("name", ["llama", "gemma2"])
def test_attn_z_is_head_major(name):
    """Zeroing the value rows of kv head g zeroes exactly the z slices h * head_dim ..
    (h + 1) * head_dim of the query heads that share it (GQA: h // n_rep == g), as
    TransformerLens's hook_z (pos, head, d_head) flattened."""
    lm = _lm(name)
    cfg = lm.model.config
    heads, kv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim \
        if getattr(cfg, "head_dim", None) else lm.d_model // cfg.num_attention_heads
    g = 1
    lm.layers[0].self_attn.v_proj.weight[g * hd:(g + 1) * hd] = 0
    z = run_captured(lm, _ids(), ["layers.0.attn_z"], bf16=False)["layers.0.attn_z"]
    zero = [h for h in range(heads) if h // (heads // kv) == g]
    for h in range(heads):
        part = z[..., h * hd:(h + 1) * hd]
        assert (part.abs().max() == 0) == (h in zero), h


def _sae(lm, h: str, seed: int = 0, k: int = 4) -> Sae:
    d = lm.width_of(h)
    sample = torch.randn(64, d, generator=torch.Generator().manual_seed(seed))
    return Sae.init_from_data(SaeConfig(d_in=d, d_sae=48, k=k, hookpoint=h), sample,
                              seed=seed)


def test_steering_at_attn_z_adds_through_o_proj_and_changes_only_the_steered_row(fam):
    """Adding v at o_proj's input adds v @ W_o.T to the projection's output; generation
    steered at attn_z changes row 1 only (rows 0 and 2 are HF's greedy text)."""
    _, lm = fam
    h = "layers.1.attn_z"
    v = torch.randn(lm.width_of(h), generator=torch.Generator().manual_seed(3))
    ids = _ids()
    clean = run_captured(lm, ids, [h, "layers.1.attn"], bf16=False)
    with edit_output(lm, h, lambda z: z + v):
        steered = run_captured(lm, ids, [h, "layers.1.attn"], bf16=False)
    torch.testing.assert_close(steered[h], clean[h] + v, atol=ATOL, rtol=0)
    if _post_norm(lm, 1) is None:
        proj = lm.module_for(h)
        added = _project(proj, v) - _project(proj, torch.zeros_like(v))
        torch.testing.assert_close(steered["layers.1.attn"] - clean["layers.1.attn"],
                                   added.expand_as(clean["layers.1.attn"]), atol=1e-4, rtol=0)
    saes = {h: _sae(lm, h)}
    gen = GenConfig(max_new_tokens=8)
    prompt = prompt_ids(lm, "the cat sat on the mat . a dog ran", gen)
    steps = []
    rows = generate(lm, saes, {h: 4.0}, prompt,
                    [None, Steering((FeatureSteer(h, 3, 8.0),)), None], gen,
                    on_step=steps.append)
    with torch.inference_mode():
        out = lm.model.generate(prompt[None], max_new_tokens=8, do_sample=False)[0]
    hf = out[len(prompt):].tolist()
    hf = hf[:hf.index(2)] if 2 in hf else hf
    assert rows[0] == rows[2] == hf
    first = steps[0]  # the prompt's next-token logits, per row
    assert torch.equal(first[0], first[2]) and not torch.allclose(first[1], first[0])
    assert hooks_left(lm) == 0


def test_fvu_and_norm_of_attn_z_equal_a_plain_computation(fam):
    """The quality row's FVU at attn_z is 1 - explained variance computed here from the
    captured z and the SAE written out (TopK of ReLU((x - b_dec) W_enc + b_enc)); the typical
    norm is the median of z's norms, as at every site; the spliced CE runs."""
    _, lm = fam
    h = "layers.2.attn_z"
    sae = _sae(lm, h, seed=1, k=6)
    windows = _ids(n=12, batch=4)
    median = residual_norms(lm, [h], windows, bf16=False)[h][0]
    x = run_captured(lm, windows, [h], bf16=False)[h]
    assert median == pytest.approx(float(x[:, 1:].norm(dim=-1).flatten().median()))
    stats = reconstruction_stats(lm, {h: sae}, windows, {h: median}, bf16=False)[h]
    xs = x[keep_mask(x, median)].double()
    pre = (xs - sae.b_dec.double()) @ sae.W_enc.double() + sae.b_enc.double()
    top = pre.relu().topk(6, dim=-1)
    acts = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
    x_hat = acts @ sae.W_dec.double() + sae.b_dec.double()
    fvu = float((xs - x_hat.detach()).pow(2).sum() / (xs - xs.mean(0)).pow(2).sum())
    assert stats.fvu() == pytest.approx(fvu, rel=1e-4) and stats.n == len(xs)
    ce = ce_per_window(lm, {h: sae}, windows, {h: median}, bf16=False)[h]
    assert ce["clean"].isfinite().all() and not torch.equal(ce["spliced"], ce["clean"])
    assert hooks_left(lm) == 0


def test_resid_mid_is_the_stream_between_attention_and_mlp(fam):
    """resid_mid = the block's input + what attention adds; the block's output = resid_mid +
    what the MLP adds; the pre-MLP norm reads it. Editing it moves the residual stream itself
    (the MLP input is the norm of the edited value). gpt-neox (parallel) has none."""
    name, lm = fam
    if FAMILIES[name].parallel:
        with pytest.raises(ValueError, match="parallel"):
            lm.module_for("layers.1.resid_mid")
        return
    ids = _ids()
    hps = ["layers.0", "layers.1", "layers.1.attn", "layers.1.mlp", "layers.1.resid_mid"]
    acts = run_captured(lm, ids, hps, bf16=False)
    mid = acts["layers.1.resid_mid"]
    torch.testing.assert_close(mid, acts["layers.0"] + acts["layers.1.attn"], atol=ATOL, rtol=0)
    torch.testing.assert_close(acts["layers.1"], mid + acts["layers.1.mlp"], atol=ATOL, rtol=0)
    v = torch.randn(lm.d_model, generator=torch.Generator().manual_seed(4))
    with edit_output(lm, "layers.1.resid_mid", lambda x: x + v):
        edited = run_captured(lm, ids, [*hps, "layers.1.mlp_in"], bf16=False)
    torch.testing.assert_close(edited["layers.1.resid_mid"], mid + v, atol=1e-4, rtol=0)
    norm = getattr(lm.layers[1], FAMILIES[name].pre_mlp_norm)
    torch.testing.assert_close(edited["layers.1.mlp_in"], norm(mid + v), atol=1e-4, rtol=0)
    torch.testing.assert_close(edited["layers.1"], mid + v + edited["layers.1.mlp"],
                               atol=1e-4, rtol=0)
    assert hooks_left(lm) == 0
