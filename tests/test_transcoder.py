"""Transcoders on a tiny random Llama: the MLP-input capture is the MLP's real input, the
math equals a plain implementation (the skip term is used), views encode the input site,
quality scores the MLP output it predicts, steering moves only the MLP output."""

import json

import pytest
import torch
import torch.nn.functional as F

from sae_core.atlas.evaluate import ce_per_window, reconstruction_stats
from sae_core.config import SaeConfig
from sae_core.encode import BF16, encode_batch, sparse_encode
from sae_core.hooks import capture, hooks_left, run_captured
from sae_core.sae import Sae
from sae_core.steer.edits import FeatureSteer, Steering, feature_acts, steering_hooks
from sae_core.transcoder import input_of, mlp_sites, sites

D, S = 32, 48
IN, OUT = mlp_sites(1)


def transcoder(architecture="jumprelu", *, skip=True, seed=0, k=5) -> Sae:
    gen = torch.Generator().manual_seed(seed)
    tc = Sae(SaeConfig(d_in=D, d_sae=S, architecture=architecture, k=k, hookpoint=OUT,
                       hookpoint_in=IN, d_out=D, skip=skip, apply_b_dec_to_input=False))
    with torch.no_grad():
        for p in tc.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        if architecture == "jumprelu":
            tc.threshold.copy_(torch.rand(S, generator=gen) * 0.3)
    return tc


def plain(tc: Sae, x, *, with_skip=True):
    """The suites' math written out: act(x W_enc + b_enc) W_dec + b_dec + x W_skip^T."""
    W_enc, b_enc = tc.W_enc_SD.detach().T, tc.b_enc.detach()
    pre = x @ W_enc + b_enc
    if tc.cfg.architecture == "jumprelu":
        acts = pre.relu() * (pre > tc.threshold.detach())
    elif tc.cfg.architecture == "relu":
        acts = pre.relu()
    else:
        vals, idx = pre.topk(tc.cfg.k, dim=-1)
        acts = torch.zeros_like(pre).scatter_(-1, idx, vals.relu())
    y = acts @ tc.W_dec.detach() + tc.b_dec.detach()
    if with_skip and tc.cfg.skip:
        y = y + x @ tc.W_skip.detach().T
    return acts, y


def ids(batch=2, length=12):
    return torch.randint(3, 16, (batch, length), generator=torch.Generator().manual_seed(3))


def test_mlp_in_capture_is_the_mlps_real_input(lm):
    x = ids()
    acts = run_captured(lm, x, [IN, OUT, "layers.1.attn"], bf16=False)
    with torch.no_grad():
        resid_in = lm.model(x, output_hidden_states=True).hidden_states[1]  # block 1's input
        block = lm.layers[1]
        want = block.post_attention_layernorm(resid_in + acts["layers.1.attn"])
        torch.testing.assert_close(acts[IN], want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(block.mlp(acts[IN]), acts[OUT], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(acts[IN], resid_in)  # the normed input, not the residual
    assert hooks_left(lm) == 0


@pytest.mark.parametrize("arch", ["jumprelu", "relu", "topk"])
def test_encode_and_forward_equal_the_plain_math_and_the_skip_is_used(arch):
    tc = transcoder(arch)
    x = torch.randn(20, D, generator=torch.Generator().manual_seed(1))
    acts, y = plain(tc, x)
    out = tc(x)
    torch.testing.assert_close(out.acts, acts, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.x_hat, y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tc.encode(x), acts, rtol=1e-5, atol=1e-5)
    # decode is what the latents write (SAELens): without the skip term, which forward adds
    _, no_skip = plain(tc, x, with_skip=False)
    torch.testing.assert_close(tc.decode(out.acts), no_skip, rtol=1e-5, atol=1e-5)
    assert (out.x_hat - no_skip).abs().max() > 0.1


def test_a_transcoder_config_is_checked():
    with pytest.raises(ValueError, match="output bias"):
        SaeConfig(d_in=D, d_sae=S, hookpoint=OUT, hookpoint_in=IN)
    with pytest.raises(ValueError, match="transcoders"):
        SaeConfig(d_in=D, d_sae=S, hookpoint=OUT, skip=True)


def test_save_and_load_round_trip_as_a_saelens_transcoder(tmp_path):
    tc = transcoder("jumprelu")
    tc.save(tmp_path / "tc")
    back = Sae.load(tmp_path / "tc")
    assert back.cfg == tc.cfg
    for name, t in tc.tensors().items():
        assert torch.equal(back.tensors()[name], t), name
    raw = json.loads((tmp_path / "tc" / "cfg.json").read_text())
    assert raw["architecture"] == "jumprelu_skip_transcoder" and raw["d_out"] == D
    assert raw["metadata"]["hook_name"] == "blocks.1.hook_mlp_in"
    assert raw["metadata"]["hook_name_out"] == "blocks.1.hook_mlp_out"


def test_views_encode_the_input_site_and_filter_at_the_output(lm):
    tc = transcoder("jumprelu")
    x = ids()
    acts = run_captured(lm, x, [IN, OUT], bf16=BF16)  # the views' precision
    median = float(acts[OUT][:, 1:].float().norm(dim=-1).median())
    codes = encode_batch(lm, {OUT: tc}, x, {OUT: median}, outlier_factor=1.0)[OUT]
    keep = acts[OUT].float().norm(dim=-1) <= median  # about half: filtered at the output
    keep[:, 0] = False
    assert torch.equal(codes.keep_BL, keep) and 0 < int(keep.sum()) < keep[:, 1:].numel()
    torch.testing.assert_close(codes.acts_BLD, acts[OUT])  # the output site's activations
    vals, idx = sparse_encode(tc, acts[IN][keep])
    got = torch.zeros(int(keep.sum()), S).scatter_add_(1, codes.idx_BLK[keep],
                                                         codes.vals_BLK[keep])
    want = torch.zeros_like(got).scatter_add_(1, idx, vals)
    torch.testing.assert_close(got, want)
    assert got.count_nonzero() > 0
    assert sites({OUT: tc, "layers.2": transcoder()}) == [OUT, "layers.2", IN]


def _mlp_io(lm, x):
    """Block 1's MLP input and output, taken with plain torch hooks (not ours)."""
    seen = {}
    handle = lm.layers[1].mlp.register_forward_hook(
        lambda m, inp, out: seen.update(x_in=inp[0], y=out))
    with torch.no_grad():
        lm.model(x, use_cache=False)
    handle.remove()
    return seen["x_in"], seen["y"]


def test_quality_row_is_the_fvu_of_the_mlp_output_it_predicts(lm):
    tc = transcoder("relu")
    x = ids(4, 16)
    x_in, y = _mlp_io(lm, x)
    median = float(y[:, 1:].norm(dim=-1).median())
    stats = reconstruction_stats(lm, {OUT: tc}, x, {OUT: median}, batch=3, bf16=False)[OUT]
    keep = y.norm(dim=-1) <= 10 * median
    keep[:, 0] = False
    y_k, x_k = y[keep].double(), x_in[keep]
    with torch.no_grad():
        y_hat = plain(tc, x_k)[1].double()
    want = ((y_k - y_hat) ** 2).sum() / ((y_k - y_k.mean(0)) ** 2).sum()
    assert stats.n == int(keep.sum())
    assert stats.fvu() == pytest.approx(float(want), rel=1e-5)


def test_splicing_a_transcoder_replaces_the_mlp_output_by_its_prediction(lm):
    tc = transcoder("relu")
    x = ids(2, 10)
    median = 1e6  # keep every token but position 0
    rows = ce_per_window(lm, {OUT: tc}, x, {OUT: median}, bf16=False, batch=2)[OUT]

    def replace(m, inp, out):  # the plain splice: prediction from the MLP's own input
        new = out.clone()
        new[:, 1:] = plain(tc, inp[0][:, 1:])[1]
        return new

    handle = lm.layers[1].mlp.register_forward_hook(replace)
    with torch.no_grad():
        logits = lm.model(x, use_cache=False).logits
    handle.remove()
    want = F.cross_entropy(logits[:, :-1].transpose(1, 2), x[:, 1:], reduction="none").mean(1)
    torch.testing.assert_close(rows["spliced"], want.double(), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(rows["spliced"], rows["clean"])


def _sites_after(lm, x, saes=None, norms=None, rows=None):
    names = ["layers.0", IN, "layers.1.attn", OUT, "layers.1"]
    with torch.inference_mode():
        if rows:
            with steering_hooks(lm, saes, norms, rows, prompt_len=x.shape[1],
                                outlier_factor=1e9), \
                    capture(lm, names, stop_early=False) as acts:
                lm.model(x, use_cache=False)
        else:
            with capture(lm, names, stop_early=False) as acts:
                lm.model(x, use_cache=False)
    return dict(acts)


def test_steering_a_transcoder_feature_moves_only_the_mlp_output(lm):
    tc = transcoder("jumprelu")
    x = ids(2, 9)
    norms = {OUT: 2.0}
    rows = [None, Steering((FeatureSteer(OUT, 7, 0.6),))]
    clean, steered = _sites_after(lm, x), _sites_after(lm, x, {OUT: tc}, norms, rows)
    row = tc.W_dec.detach()[7]
    delta = steered[OUT][1, 1:] - clean[OUT][1, 1:]
    torch.testing.assert_close(delta, (0.6 * 2.0 * row / row.norm()).expand(8, -1),
                               atol=1e-5, rtol=0)
    for h in ("layers.0", IN, "layers.1.attn"):  # what the MLP reads and everything before
        assert torch.equal(steered[h], clean[h]), h
    torch.testing.assert_close(steered["layers.1"] - clean["layers.1"],
                               steered[OUT] - clean[OUT], atol=1e-5, rtol=0)
    assert torch.equal(steered[OUT][0], clean[OUT][0])  # the unsteered row
    assert hooks_left(lm) == 0


def test_clamping_a_transcoder_feature_reads_its_activation_from_the_mlp_input(lm):
    tc = transcoder("relu")
    x = ids(1, 9)
    rows = [Steering((FeatureSteer(OUT, 4, 0.5, "clamp"),))]
    clean, steered = _sites_after(lm, x), _sites_after(lm, x, {OUT: tc}, {OUT: 3.0}, rows)
    with torch.inference_mode():
        a = feature_acts(tc, clean[IN][0, 1:], torch.tensor([4]))[:, 0]
    assert a.count_nonzero() > 0
    row = tc.W_dec.detach()[4]
    want = (1.5 / row.norm() - a)[:, None] * row
    torch.testing.assert_close(steered[OUT][0, 1:] - clean[OUT][0, 1:], want,
                               atol=1e-5, rtol=0)


def test_input_of_names_a_missing_capture():
    with pytest.raises(KeyError, match=r"transcoder\.sites"):
        input_of(OUT, transcoder(), {OUT: torch.zeros(1, 2, D)})


def test_on_gemma2_mlp_in_is_the_pre_feedforward_norms_output():
    """Gemma Scope reads `ln2.hook_normalized` (Gemma 2), Gemma Scope 2
    `pre_feedforward_layernorm.output` (Gemma 3): the MLP's input, not the post-MLP norm's."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    from sae_core.lm import LM, find_layers
    from tests.tiny import tiny_tokenizer

    torch.manual_seed(0)
    model = Gemma2ForCausalLM(Gemma2Config(
        vocab_size=64, hidden_size=D, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        max_position_embeddings=128)).eval().requires_grad_(False)
    gemma = LM(model=model, tokenizer=tiny_tokenizer(), name="tiny-gemma2",
               layers=find_layers(model))
    seen = {}
    handle = gemma.layers[1].pre_feedforward_layernorm.register_forward_hook(
        lambda m, inp, out: seen.update(normed=out))
    acts = run_captured(gemma, ids(), [IN], bf16=False)
    handle.remove()
    torch.testing.assert_close(acts[IN], seen["normed"], rtol=0, atol=0)
