"""Hookpoint names and the massive-activation rule."""

import pytest
import torch

from sae_core.activations import keep_mask, layer_name, layer_of, parse_hookpoint


def test_hookpoint_names_round_trip_and_bad_names_are_errors():
    assert parse_hookpoint("layers.12") == (12, "")
    assert parse_hookpoint("layers.3.mlp") == (3, "mlp")
    assert parse_hookpoint("layers.3.attn") == (3, "attn")
    assert layer_of("layers.7.mlp") == 7
    assert [layer_name(h) for h in ("layers.5", "layers.5.mlp")] == ["5", "5 mlp"]
    for bad in ("layers.x", "blocks.3.hook_resid_post", "layers.3.attention", "", "layers.-1"):
        with pytest.raises(ValueError, match="unknown hookpoint"):
            parse_hookpoint(bad)


def test_keep_mask_drops_position_zero_and_massive_tokens():
    acts = torch.ones(2, 5, 4)
    acts[1, 3] *= 50
    keep = keep_mask(acts, median_norm=2.0, outlier_factor=10)
    assert keep.tolist() == [[False, True, True, True, True], [False, True, True, False, True]]
    assert keep_mask(acts, median_norm=2.0).tolist() == keep.tolist()  # 10 is the default


def test_outlier_factor_comes_from_the_atlas(loaded):
    assert loaded.outlier_factor == loaded.info.train_cfg["outlier_factor"]
