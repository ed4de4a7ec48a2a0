"""Typical residual norms: measured ones equal direct computations, stored ones are read."""

import pytest
import torch

from sae_core.hooks import run_captured
from sae_core.norms import medians_of, residual_norms, typical_norms
from sae_core.sae import Sae


def test_medians_come_from_the_sae_metadata(loaded):
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
