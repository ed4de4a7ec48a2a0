"""The feature index built from the model against dense encodings; which windows and
tokens it reads."""

import json

import pytest
import torch

from sae_core.activations import keep_mask
from sae_core.config import SaeConfig
from sae_core.encode import BF16, encode_dense, sparse_encode
from sae_core.explore.feature_index import (
    collect_codes,
    ensure_feature_index,
    index_windows,
)
from sae_core.explore.feature_page import feature_page, open_index
from sae_core.explore.feature_stats import IndexConfig
from sae_core.hooks import run_captured
from sae_core.sae import Sae
from tests.explore.index_helpers import HOOKS, _brute_force
from ui.features.view import snippets_html, summary_markdown
from ui.serving import session


def test_index_windows_put_held_out_first():
    windows = torch.arange(100 * 4).view(100, 4)
    heldout = torch.arange(5, 100, 10)  # 10 windows spread over the corpus
    chosen, source = index_windows(windows, heldout, max_tokens=4 * 30)
    assert source == {"heldout_windows": 10, "labelled_windows": 0, "train_windows": 20,
                      "train_stride": 4}
    assert len(chosen) == 30 and len({tuple(w) for w in chosen.tolist()}) == 30
    assert torch.equal(chosen[:10], windows[heldout])


def test_index_windows_take_the_labelled_windows_next():
    windows = torch.arange(100 * 4).view(100, 4)
    heldout = torch.arange(5, 100, 10)
    labelled = -torch.arange(12 * 4).view(12, 4)  # apart from every corpus window
    chosen, source = index_windows(windows, heldout, 4 * 30, labelled)
    assert source == {"heldout_windows": 10, "labelled_windows": 12, "train_windows": 8,
                      "train_stride": 11}
    assert torch.equal(chosen[10:22], labelled) and len(chosen) == 30
    # no room left: the first labelled windows only, no training windows
    chosen, source = index_windows(windows, heldout, 4 * 15, labelled)
    assert torch.equal(chosen, torch.cat([windows[heldout], labelled[:5]]))
    assert source["train_windows"] == 0


def test_build_matches_dense_encoding(hand_atlas):
    loaded, windows, cfg = hand_atlas
    # The index reads windows in batches of cfg.batch: the same forwards, encoded densely.
    parts = [run_captured(loaded.lm, windows[s:s + cfg.batch], HOOKS, bf16=BF16)
             for s in range(0, len(windows), cfg.batch)]
    for h in HOOKS:
        acts_BLD = torch.cat([p[h] for p in parts])
        keep = keep_mask(acts_BLD, 1e9, 10.0).reshape(-1)
        dense = encode_dense(loaded.saes[h], acts_BLD.flatten(0, 1)) * keep[:, None]
        vals, idx = dense.topk(4, dim=1)
        expected = _brute_force(vals, idx, 48, 16, cfg)
        assert len(expected) > 30  # most features fire somewhere
        for f in range(2, 48):
            page = feature_page(loaded, h, f)
            assert [s.window * 16 + s.position for s in page.top] == expected.get(f, [])
            assert page.n_fire == int((dense[:, f] > 0).sum()) and page.n_tokens == 12 * 15
            for s in page.top:
                t = s.window * 16 + s.position
                assert s.value == pytest.approx(float(dense[t, f]))
                assert s.acts[s.peak] == pytest.approx(s.value, rel=1e-3)  # fp16 snippet
                lo = t - s.peak
                assert list(s.acts) == pytest.approx(dense[lo:lo + len(s.acts), f].tolist(),
                                                     rel=1e-3, abs=1e-3)
                text = loaded.lm.tokenizer.decode(windows.view(-1)[lo:lo + len(s.acts)])
                assert "".join(s.pieces) == text


def test_dead_and_always_on_features(hand_atlas):
    loaded, _, cfg = hand_atlas
    dead = feature_page(loaded, "layers.2", 0)
    assert dead.dead and dead.top == () and dead.samples == () and dead.density == 0
    assert "never fired" in snippets_html(dead) and "Dead" in summary_markdown(dead)
    assert len(dead.promoted) == 10  # the logit lens works for any feature
    always = feature_page(loaded, "layers.2", 1)
    assert always.density == 1.0 and always.n_contexts == 12 * 4
    assert len(always.top) == cfg.top_n and len(always.samples) > 0
    assert sum(always.hist_counts) == always.n_fire


def test_ensure_feature_index_on_tiny_atlas(tiny_atlas):
    lm = session.open_atlas(tiny_atlas).lm
    meta = ensure_feature_index(tiny_atlas, lm=lm)
    assert set(meta["layers"]) == {"layers.0", "layers.1", "layers.2"}
    assert meta["source"]["heldout_windows"] == 8
    assert json.loads((tiny_atlas / "features" / "index.json").read_text()) == meta
    assert ensure_feature_index(tiny_atlas) == meta  # cached: no model needed now
    loaded = session.open_atlas(tiny_atlas)
    busiest = int(open_index(tiny_atlas).layer_stats("layers.1")["n_fire"].argmax())
    page = feature_page(loaded, "layers.1", busiest)
    assert page.top and page.n_fire > 0
    assert page.labels  # the tiny atlas has a layer map
    assert all(0 <= lab.consistency <= 1 for lab in page.labels)


def test_codes_skip_position_zero_and_outliers(lm):
    sae = Sae.init_from_data(SaeConfig(d_in=32, d_sae=16, k=2), torch.randn(8, 32))
    windows = torch.randint(3, 16, (2, 8))
    acts = run_captured(lm, windows, ["layers.1"], bf16=BF16)["layers.1"]
    median = float(acts.float().norm(dim=-1).median())
    codes = collect_codes(lm, {"layers.1": sae}, {"layers.1": median}, windows,
                          outlier_factor=1.0, cfg=IndexConfig())
    vals, _, kept = codes["layers.1"]
    keep = keep_mask(acts, median, 1.0).reshape(-1)
    assert kept == int(keep.sum()) < 14
    assert (vals[~keep] == 0).all() and (vals[keep].sum(1) > 0).all()


def test_index_codes_respect_a_jumprelu_threshold():
    """A JumpReLU latent below its threshold does not fire, so it never enters the index."""
    sae = Sae(SaeConfig(d_in=2, d_sae=2, architecture="jumprelu", k=2))
    with torch.no_grad():
        sae.W_enc_SD.copy_(torch.eye(2))
        sae.threshold.copy_(torch.tensor([0.5, 0.0]))
    vals, idx = sparse_encode(sae, torch.tensor([[0.3, 0.2]]))
    assert idx.tolist() == [[1]] and vals[0, 0] == pytest.approx(0.2, rel=1e-2)
