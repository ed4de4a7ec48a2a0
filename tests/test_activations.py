"""Hookpoint names, the massive-activation rule and typical norms, against direct
computations on the tiny atlas."""

import pytest
import torch

from sae_core.activations import (
    keep_mask,
    layer_name,
    layer_of,
    medians_of,
    outlier_factor_of,
    parse_hookpoint,
    residual_norms,
    typical_norms,
)
from sae_core.hooks import run_captured
from sae_core.sae import Sae


def test_hookpoint_names_round_trip_and_bad_names_are_errors():
    assert parse_hookpoint("layers.12") == (12, False)
    assert parse_hookpoint("layers.3.mlp") == (3, True)
    assert layer_of("layers.7.mlp") == 7
    assert [layer_name(h) for h in ("layers.5", "layers.5.mlp")] == ["5", "5 mlp"]
    for bad in ("layers.x", "blocks.3.hook_resid_post", "layers.3.attn", "", "layers.-1"):
        with pytest.raises(ValueError, match="unknown hookpoint"):
            parse_hookpoint(bad)


def test_keep_mask_drops_position_zero_and_massive_tokens():
    acts = torch.ones(2, 5, 4)
    acts[1, 3] *= 50
    keep = keep_mask(acts, median_norm=2.0, outlier_factor=10)
    assert keep.tolist() == [[False, True, True, True, True], [False, True, True, False, True]]
    assert keep_mask(acts, median_norm=2.0).tolist() == keep.tolist()  # 10 is the default


def test_outlier_factor_and_medians_come_from_the_atlas(loaded):
    assert outlier_factor_of({}) == 10.0
    assert outlier_factor_of({"train_cfg": {"outlier_factor": 4}}) == 4.0
    assert loaded.outlier_factor == loaded.info["train_cfg"]["outlier_factor"]
    assert medians_of(loaded.saes) == {h: s.metadata["median_norm"]
                                       for h, s in loaded.saes.items()}


def test_residual_norms_equal_norms_of_captured_activations(loaded):
    windows = torch.randint(3, 16, (5, 12), generator=torch.Generator().manual_seed(0))
    got = residual_norms(loaded.lm, loaded.hookpoints, windows, outlier_factor=1.2, batch=2,
                         bf16=False)
    acts = run_captured(loaded.lm, windows, loaded.hookpoints, bf16=False)
    for h in loaded.hookpoints:
        n = acts[h][:, 1:].norm(dim=-1).flatten()
        median = float(n.median())
        assert got[h][0] == pytest.approx(median, rel=1e-5)
        assert got[h][1] == pytest.approx(float(n[n <= 1.2 * median].mean()), rel=1e-5)


def test_typical_norm_is_measured_when_the_sae_lacks_it(loaded):
    sae = loaded.saes["layers.2"]
    bare = Sae(sae.cfg)
    bare.load_state_dict(sae.state_dict())  # same weights, no metadata (as from the Hub)
    saes = {"layers.2": bare}
    norms, measured = typical_norms(loaded.lm, saes, ["layers.2"], corpus=loaded.corpus)
    assert measured == ["layers.2"]
    stored = sae.metadata["median_norm"]
    assert 0.7 * stored < norms["layers.2"] < 1.3 * stored
    norms2, measured2 = typical_norms(loaded.lm, loaded.saes, ["layers.2"])
    assert measured2 == [] and norms2["layers.2"] == stored
