"""Steering edits on a tiny model and hand-set SAEs: the residual moves by exactly the
requested vector."""

import math

import pytest
import torch

from sae_core.config import SaeConfig
from sae_core.hooks import capture
from sae_core.sae import Sae
from sae_core.steer.edits import (
    FeatureSteer,
    Steering,
    _Cursor,
    _layer_edit,
    feature_acts,
    hookpoint_for_layer,
    steering_hooks,
)
from tests.steer.common import _n_hooks


def _random_sae(d_in=32, d_sae=64, k=4, hookpoint="layers.1", seed=0) -> Sae:
    sae = Sae.init_from_data(SaeConfig(d_in=d_in, d_sae=d_sae, k=k, hookpoint=hookpoint),
                             torch.zeros(1, d_in), seed=seed)
    sae.W_dec.data *= 1.7  # not unit rows: the add mode must normalise the direction
    return sae


def _orthogonal_sae(d_in=32, d_sae=16, k=4, hookpoint="layers.1") -> Sae:
    """Orthonormal decoder rows, W_enc = W_dec^T, zero biases: encode(decode(a)) == a."""
    q, _ = torch.linalg.qr(torch.randn(d_in, d_in, generator=torch.Generator().manual_seed(1)))
    sae = Sae(SaeConfig(d_in=d_in, d_sae=d_sae, k=k, hookpoint=hookpoint))
    sae.W_dec.data.copy_(q[:d_sae])
    sae.W_enc_SD.data.copy_(q[:d_sae])
    return sae


def _layer_out(lm, ids_BL, hookpoint, saes=None, norms=None, rows=None):
    hooks = steering_hooks(lm, saes, norms, rows, prompt_len=ids_BL.shape[1],
                           outlier_factor=1e9) if rows else None
    with torch.inference_mode():
        if hooks:
            with hooks, capture(lm, [hookpoint], stop_early=False) as acts:
                lm.model(ids_BL, use_cache=False)
        else:
            with capture(lm, [hookpoint], stop_early=False) as acts:
                lm.model(ids_BL, use_cache=False)
    return acts[hookpoint]


def test_add_hook_changes_the_residual_by_exactly_the_requested_vector(lm):
    sae = _random_sae()
    saes, norms = {"layers.1": sae}, {"layers.1": 2.5}
    ids = torch.randint(3, 16, (1, 9)).expand(3, 9)
    steer = Steering((FeatureSteer("layers.1", 7, 0.8), FeatureSteer("layers.1", 20, -0.3)))
    one = Steering((FeatureSteer("layers.1", 7, 0.8),), positions="generated")
    clean = _layer_out(lm, ids, "layers.1")
    edited = _layer_out(lm, ids, "layers.1", saes, norms, [None, steer, one])
    unit = sae.W_dec.detach() / sae.W_dec.detach().norm(dim=-1, keepdim=True)
    want = 0.8 * 2.5 * unit[7] - 0.3 * 2.5 * unit[20]
    assert torch.equal(edited[0], clean[0])  # the unsteered row is untouched, bit for bit
    assert torch.equal(edited[:, 0], clean[:, 0])  # position 0 is never edited
    torch.testing.assert_close(edited[1, 1:] - clean[1, 1:], want.expand(8, -1),
                               atol=1e-5, rtol=0)
    # "generated": only the last prompt position (it predicts the first new token) moves
    assert torch.equal(edited[2, :-1], clean[2, :-1])
    torch.testing.assert_close(edited[2, -1] - clean[2, -1], 0.8 * 2.5 * unit[7],
                               atol=1e-5, rtol=0)
    assert _n_hooks(lm) == 0


def test_clamp_sets_the_feature_activation_on_hand_set_weights():
    sae = _orthogonal_sae()
    f, v, norm = 3, 1.25, 2.0
    gen = torch.Generator().manual_seed(0)
    a_active = torch.zeros(4, 16)
    a_active[:, [0, 3, 5, 9]] = torch.rand(4, 4, generator=gen) + 0.5  # f among the top k
    a_off = torch.zeros(4, 16)
    a_off[:, [2, 6, 11]] = torch.rand(4, 3, generator=gen) + 0.5  # f silent: pre_f = 0
    x_BLD = torch.stack([sae.decode(a_active), sae.decode(a_off)])  # (2, 4, 32)
    rows = [None, Steering((FeatureSteer("layers.1", f, v / norm, "clamp"),))]
    edit = _layer_edit(sae, norm, rows, "layers.1", 1, _Cursor(offset=1), 1e9)
    out = edit(torch.cat([x_BLD[:1], x_BLD[:1]]))  # row 1 steered, row 0 not
    out_off = edit(torch.cat([x_BLD[1:], x_BLD[1:]]))
    assert torch.equal(out[0], x_BLD[0])
    for x, y in ((x_BLD[0], out[1]), (x_BLD[1], out_off[1])):
        before, after = sae.encode(x), sae.encode(y)
        torch.testing.assert_close(after[:, f], torch.full((4,), v), atol=1e-5, rtol=0)
        others = torch.arange(16) != f
        torch.testing.assert_close(after[:, others], before[:, others], atol=1e-5, rtol=0)


@pytest.mark.parametrize("row_norm", [1.0, 3.0])
def test_clamp_writes_strength_times_norm_whatever_the_decoder_row_norm(row_norm):
    sae = _orthogonal_sae()
    f, s, norm = 3, 0.5, 2.0
    with torch.no_grad():
        sae.W_dec[f] *= row_norm  # a SAELens standard SAE's rows are not unit vectors
    a_off = torch.zeros(4, 16)
    a_off[:, [2, 6, 11]] = 1.0  # f silent
    x_1LD = sae.decode(a_off).detach()[None]
    edit = _layer_edit(sae, norm, [Steering((FeatureSteer("layers.1", f, s, "clamp"),))],
                       "layers.1", 1, _Cursor(offset=1), 1e9)
    written = (edit(x_1LD) - x_1LD)[0].norm(dim=-1)
    torch.testing.assert_close(written, torch.full((4,), s * norm), atol=1e-5, rtol=0)


def test_clamp_in_the_model_moves_the_residual_by_value_minus_activation(lm):
    sae = _random_sae()
    saes, norms = {"layers.1": sae}, {"layers.1": 3.0}
    ids = torch.randint(3, 16, (1, 8)).expand(2, 8)
    rows = [None, Steering((FeatureSteer("layers.1", 11, 0.5, "clamp"),))]
    clean = _layer_out(lm, ids, "layers.1")
    edited = _layer_out(lm, ids, "layers.1", saes, norms, rows)
    a = feature_acts(sae, clean[1, 1:], torch.tensor([11]))[:, 0]
    row = sae.W_dec.detach()[11]
    want = (1.5 / row.norm() - a)[:, None] * row  # the feature then writes 1.5 along it
    torch.testing.assert_close(edited[1, 1:] - clean[1, 1:], want, atol=1e-5, rtol=0)
    assert torch.equal(edited[0], clean[0])


@pytest.mark.parametrize("strength", [math.nan, math.inf, -math.inf, 1e6, 20.5])
def test_bad_strength_is_a_clear_error(strength):
    with pytest.raises(ValueError, match="strength"):
        FeatureSteer("layers.1", 2, strength)


def test_mlp_hookpoints_steer_too(lm):
    sae = _random_sae(hookpoint="layers.1.mlp")
    saes, norms = {"layers.1.mlp": sae}, {"layers.1.mlp": 0.5}
    assert hookpoint_for_layer(saes, 1) == "layers.1.mlp"
    ids = torch.randint(3, 16, (1, 6)).expand(2, 6)
    rows = [None, Steering((FeatureSteer("layers.1.mlp", 3, 2.0),))]
    clean = _layer_out(lm, ids, "layers.1.mlp")
    edited = _layer_out(lm, ids, "layers.1.mlp", saes, norms, rows)
    unit = sae.W_dec.detach()[3] / sae.W_dec.detach()[3].norm()
    torch.testing.assert_close(edited[1, 1:] - clean[1, 1:], (2.0 * 0.5 * unit).expand(5, -1),
                               atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="layer 4 is not in this SAE set"):
        hookpoint_for_layer(saes, 4)


def test_steering_selects_latents_as_the_training_step_does_under_ties(monkeypatch):
    """Planted ties at the k-th value: the step's top-k (topk.topk_sorted, which the views'
    encoder shares) keeps the lowest ids; steering's feature activations must agree, where a
    `>= k-th value` rule would keep every tied latent."""
    from sae_core.topk import topk_sorted

    sae = _random_sae()  # TopK
    k, d_sae = sae.cfg.k, sae.cfg.d_sae
    pre_NS = torch.zeros(3, d_sae)
    pre_NS[0, : k + 2] = 1.0  # k + 2 latents tied at the k-th value
    pre_NS[1, 3: 3 + k + 1] = 2.0  # k + 1 tied, from id 3
    pre_NS[2, torch.arange(k)] = torch.arange(k, 0, -1).float()  # no tie
    monkeypatch.setattr(sae, "pre_acts", lambda x: pre_NS)
    feats_C = torch.arange(d_sae)
    acts_NS = feature_acts(sae, torch.zeros(3, sae.cfg.d_in), feats_C)
    _, idx_NK = topk_sorted(pre_NS, k)
    step_NS = torch.zeros_like(pre_NS).scatter_(1, idx_NK, pre_NS.gather(1, idx_NK))
    torch.testing.assert_close(acts_NS, step_NS, atol=0, rtol=0)
    assert (acts_NS > 0).sum(dim=1).tolist() == [k, k, k]  # never more than k fire
    assert acts_NS[0, :k].min() == 1.0 and acts_NS[0, k:].max() == 0.0  # the lowest ids


def test_steering_gates_a_jumprelu_sae_as_the_sae_does():
    """The JumpReLU gate steering reads is the SAE's own: planted pre-activations exactly at,
    just above and below each threshold, and thresholds below zero."""
    sae = Sae(SaeConfig(d_in=8, d_sae=6, architecture="jumprelu", hookpoint="layers.1"))
    threshold_S = torch.tensor([0.5, 0.5, 0.5, -0.25, -0.25, 0.0])
    sae.threshold.data.copy_(threshold_S)
    pre_NS = torch.tensor([[0.5, 0.51, 0.49, -0.25, -0.1, 0.0],
                           [1.0, -1.0, 0.5, 0.3, -0.3, 1e-6]])
    sae.pre_acts = lambda x: pre_NS  # the gate alone, not the encoder
    x_ND = torch.zeros(2, 8)
    feats_C = torch.tensor([5, 0, 1, 3, 4])  # a subset, out of order
    acts_NC = feature_acts(sae, x_ND, feats_C)
    torch.testing.assert_close(acts_NC, sae.encode(x_ND)[:, feats_C], atol=0, rtol=0)
    expected_NS = torch.where(pre_NS > threshold_S, pre_NS.clamp_min(0), 0.0)
    torch.testing.assert_close(acts_NC, expected_NS[:, feats_C], atol=0, rtol=0)
