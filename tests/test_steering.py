"""Steering hooks and side-by-side generation on a tiny model and hand-set SAEs."""

import math

import pytest
import torch

from sae_core.activations import typical_norms
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
from sae_core.steer.generation import GenConfig, generate, prompt_ids, side_by_side
from ui import session

PROMPT = "the cat sat on the mat . a dog ran"


def _n_hooks(lm):
    return sum(len(m._forward_hooks) for m in lm.model.modules())


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


def test_clamp_in_the_model_moves_the_residual_by_value_minus_activation(lm):
    sae = _random_sae()
    saes, norms = {"layers.1": sae}, {"layers.1": 3.0}
    ids = torch.randint(3, 16, (1, 8)).expand(2, 8)
    rows = [None, Steering((FeatureSteer("layers.1", 11, 0.5, "clamp"),))]
    clean = _layer_out(lm, ids, "layers.1")
    edited = _layer_out(lm, ids, "layers.1", saes, norms, rows)
    a = feature_acts(sae, clean[1, 1:], torch.tensor([11]))[:, 0]
    want = (1.5 - a)[:, None] * sae.W_dec.detach()[11]
    torch.testing.assert_close(edited[1, 1:] - clean[1, 1:], want, atol=1e-5, rtol=0)
    assert torch.equal(edited[0], clean[0])


def test_strength_zero_gives_the_unsteered_output(tiny_atlas):
    loaded = session.open_atlas(tiny_atlas)
    for temperature in (0.0, 1.0):
        gen = GenConfig(max_new_tokens=12, temperature=temperature, seed=3)
        out = side_by_side(loaded, PROMPT, Steering((FeatureSteer("layers.1", 5, 0.0),)), gen)
        assert out.steered == out.unsteered and out.n_tokens[0] == out.n_tokens[1]


def test_batched_rows_equal_solo_runs_and_steering_changes_the_text(tiny_atlas):
    loaded = session.open_atlas(tiny_atlas)
    ids = prompt_ids(loaded.lm, PROMPT, GenConfig())
    norms, _ = typical_norms(loaded.lm, loaded.saes, ["layers.1", "layers.2"])
    steer = Steering((FeatureSteer("layers.1", 5, 8.0), FeatureSteer("layers.2", 9, 6.0)))
    for gen in (GenConfig(max_new_tokens=16), GenConfig(max_new_tokens=16, temperature=1.0)):
        batch = generate(loaded.lm, loaded.saes, norms, ids, [None, steer], gen)
        plain = generate(loaded.lm, loaded.saes, norms, ids, [None], gen)[0]
        alone = generate(loaded.lm, loaded.saes, norms, ids, [steer], gen)[0]
        assert batch == [plain, alone]
        assert batch[0] != batch[1]
    assert _n_hooks(loaded.lm) == 0


def test_no_hook_survives_an_exception(tiny_atlas):
    loaded = session.open_atlas(tiny_atlas)
    ids = prompt_ids(loaded.lm, PROMPT, GenConfig())
    norms, _ = typical_norms(loaded.lm, loaded.saes, ["layers.0", "layers.2"])
    steer = Steering((FeatureSteer("layers.0", 1, 1.0), FeatureSteer("layers.2", 2, 1.0, "clamp")))
    before = _n_hooks(loaded.lm)

    def boom(_logits):
        assert _n_hooks(loaded.lm) == before + 2  # the hooks were in place
        raise RuntimeError("visitor closed the tab")

    with pytest.raises(RuntimeError, match="closed the tab"):
        generate(loaded.lm, loaded.saes, norms, ids, [None, steer], GenConfig(), on_step=boom)
    assert _n_hooks(loaded.lm) == before == 0


@pytest.mark.parametrize("strength", [math.nan, math.inf, -math.inf, 1e6, 20.5])
def test_bad_strength_is_a_clear_error(strength):
    with pytest.raises(ValueError, match="strength"):
        FeatureSteer("layers.1", 2, strength)


def test_bad_requests_are_clear_errors(tiny_atlas):
    loaded = session.open_atlas(tiny_atlas)
    ok = Steering((FeatureSteer("layers.1", 5, 0.5),))
    cases = [
        ("   ", ok, GenConfig(), "prompt"),
        (PROMPT, Steering((FeatureSteer("layers.1", 64, 0.5),)), GenConfig(), "feature 64"),
        (PROMPT, Steering((FeatureSteer("layers.7", 1, 0.5),)), GenConfig(), "layer 7"),
        (" ".join(["cat"] * 120), ok, GenConfig(max_new_tokens=20), "prompt is"),
    ]
    for prompt, steering, gen, match in cases:
        with pytest.raises(ValueError, match=match):
            side_by_side(loaded, prompt, steering, gen)
    with pytest.raises(ValueError, match="max new tokens"):
        GenConfig(max_new_tokens=10_000)
    with pytest.raises(ValueError, match="at least one feature"):
        Steering(())
    assert _n_hooks(loaded.lm) == 0


def test_typical_norm_is_measured_when_the_sae_lacks_it(tiny_atlas):
    loaded = session.open_atlas(tiny_atlas)
    sae = loaded.saes["layers.2"]
    bare = Sae(sae.cfg)
    bare.load_state_dict(sae.state_dict())  # same weights, no metadata (as from the Hub)
    saes = {"layers.2": bare}
    norms, measured = typical_norms(loaded.lm, saes, ["layers.2"],
                                    corpus=loaded.info["corpus"])
    assert measured == ["layers.2"]
    stored = sae.metadata["median_norm"]
    assert 0.7 * stored < norms["layers.2"] < 1.3 * stored
    norms2, measured2 = typical_norms(loaded.lm, loaded.saes, ["layers.2"])
    assert measured2 == [] and norms2["layers.2"] == stored


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


def test_tab_helpers_diff_and_extra_features(tiny_atlas):
    import gradio as gr

    from ui.steering import diff_highlight, parse_extra, run_steering

    left, right = diff_highlight("the cat sat on the mat", "the dog sat on a mat")
    assert "".join(t for t, _ in left) == "the cat sat on the mat"
    assert [t for t, c in left if c] == ["cat", "the"]
    assert [t for t, c in right if c] == ["dog", "a"]
    assert parse_extra(" 13:90:0.5, 2:7:-1.5 ") == [(13, 90, 0.5), (2, 7, -1.5)]
    with pytest.raises(ValueError, match="layer:feature:strength"):
        parse_extra("13:90")
    folder = str(tiny_atlas)
    plain, _, notes = run_steering(folder, PROMPT, 1, 5, 1.0, "add", "all", "2:7:0.5", 8, 0, 0)
    assert plain and "layer 1 feature 5" in notes and "layer 2 feature 7" in notes
    for args in ((folder, PROMPT, 1, 5, math.nan, "add", "all", "", 8, 0, 0),
                 (folder, PROMPT, 1.5, 5, 1.0, "add", "all", "", 8, 0, 0),
                 ("", PROMPT, 1, 5, 1.0, "add", "all", "", 8, 0, 0),
                 (folder, PROMPT, 1, 5, 1.0, "add", "all", "", 500, 0, 0)):
        with pytest.raises(gr.Error):
            run_steering(*args)


def test_few_rows_linear_matches_and_stays_in_its_thread():
    import threading

    import torch.nn.functional as F

    from sae_core.steer.generation import _FewRowsLinear

    threads = []

    class Counting(_FewRowsLinear):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is F.linear:
                threads.append(threading.get_ident())
            return super().__torch_function__(func, types, args, kwargs)

    w, b = torch.randn(48, 32), torch.randn(48)
    x = torch.randn(2, 1, 32)
    with Counting():
        y = F.linear(x, w, b)
        t = threading.Thread(target=F.linear, args=(x, w, b))  # another visitor's forward
        t.start()
        t.join()
    torch.testing.assert_close(y, x @ w.T + b)
    assert threads == [threading.get_ident()]


def test_the_tab_hands_out_its_feature_inputs(tiny_atlas):
    import gradio as gr

    from ui.steering import build_steering_tab

    with gr.Blocks():
        picker = gr.Dropdown([str(tiny_atlas)], value=str(tiny_atlas))
        tab = build_steering_tab(picker)
    assert isinstance(tab.layer, gr.Number) and isinstance(tab.feature, gr.Number)
    assert isinstance(tab.strength, gr.Slider) and tab.tab.id == "steering"
