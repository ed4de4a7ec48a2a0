"""Layer-map counts against direct counts; the stored map read back and refreshed."""

import numpy as np
import torch

from sae_core.activations import keep_mask
from sae_core.config import SaeConfig
from sae_core.encode import BF16, sparse_encode
from sae_core.explore.labels import LabelledWindows
from sae_core.explore.layermap import (
    CRITERIA,
    KINDS,
    LAYER_MAP_FILE,
    MAP_TASKS,
    LayerMapData,
    compute_layer_map,
    ensure_layer_map,
    read_layer_map,
)
from sae_core.hooks import run_captured
from sae_core.sae import Sae

HOOKS = ["layers.0", "layers.2"]


def _data(n=12, seq=8):
    gen = torch.Generator().manual_seed(0)
    windows = torch.randint(3, 64, (n, seq), generator=gen)
    # label = token id mod 3 for every task: a known function of the input
    labels = {t: (windows.numpy() % 3).astype(np.int16) for t in MAP_TASKS}
    vocab = {t: ["a", "b", "c", "absent"] for t in MAP_TASKS}
    return LabelledWindows(windows=windows, labels=labels, vocab=vocab)


def _saes(lm):
    x = torch.randn(64, 32)
    return {h: Sae.init_from_data(SaeConfig(d_in=32, d_sae=64, k=4, hookpoint=h), x, seed=i)
            for i, h in enumerate(HOOKS)}


def test_counts_match_a_direct_count(lm, tmp_path):
    data, saes = _data(), _saes(lm)
    medians = {h: 1e9 for h in HOOKS}  # keep every position >= 1
    lmap = compute_layer_map(lm, saes, medians, data, batch=5)
    # The same forwards (batches of 5 windows), each token's k latents counted by hand.
    parts = [run_captured(lm, data.windows[s:s + 5], HOOKS, bf16=BF16) for s in range(0, 12, 5)]
    for h in HOOKS:
        acts_BLD = torch.cat([p[h] for p in parts])
        keep = keep_mask(acts_BLD, 1e9, 10.0)
        _, idx = sparse_encode(saes[h], acts_BLD[keep])
        lab = torch.from_numpy(data.labels["pos"].astype(np.int64))[keep]
        direct = torch.zeros(64, 4, dtype=torch.long)
        for row, lab_n in zip(idx.tolist(), lab.tolist(), strict=True):
            for f in row:
                direct[f, lab_n] += 1
        assert torch.equal(lmap.counts[f"sae/{h}/pos"], direct)
        assert lmap.counts[f"sae/{h}/pos"][:, 3].sum() == 0  # the absent label never counts
    assert lmap.n_tokens == 12 * 7
    assert abs(lmap.fire_rate - 4 / 64) < 1e-9  # every TopK slot fired


def test_controls_match_the_sae_support_and_round_trip_with_intervals(lm, tmp_path):
    data, saes = _data(), _saes(lm)
    lmap = compute_layer_map(lm, saes, {h: 1e9 for h in HOOKS}, data, batch=4)
    for h in HOOKS:
        support = lmap.counts[f"sae/{h}/dep"].sum(1)
        for kind in ("neuron", "random", "whitened"):
            counts = lmap.counts[f"{kind}/{h}/dep"]
            assert counts.shape == (64, 4)
            assert torch.equal(counts.sum(1).sort().values, support.sort().values), kind
        # every token fires k = 4 random-dictionary directions
        assert int(lmap.counts[f"topk_random/{h}/pos"].sum()) == 4 * lmap.n_tokens
        # per-layer base rates, from that layer's tokens
        assert torch.allclose(lmap.rate(h, "pos").sum(), torch.tensor(1.0, dtype=torch.float64))
    heat = lmap.heatmap("pos", threshold=0.0, min_support=1)
    alive = int((lmap.counts["sae/layers.0/pos"].sum(1) > 0).sum())
    assert heat.shape == (2, 4) and int(heat[0].sum()) == alive  # every alive one accepted
    assert lmap.heatmap("pos", threshold=1.01, min_support=1).sum() == 0
    c = CRITERIA
    for kind in KINDS:
        band = lmap.accept_interval("pos", c.threshold, c.min_support, kind, c.min_lift)
        share = lmap.accept_share("pos", c.threshold, c.min_support, kind, c.min_lift)
        assert band is not None and len(band) == 2
        assert all(lo <= hi for lo, hi in band)
        assert all(lo >= 0.0 and hi <= 1.0 for lo, hi in band), (kind, band, share)
    assert lmap.accept_interval("pos", 0.5, 2, "sae", 0.0) is None  # other criteria: none
    lmap.save(tmp_path / "map.safetensors")
    again = LayerMapData.load(tmp_path / "map.safetensors")
    assert again.hookpoints == HOOKS and again.vocab == lmap.vocab
    assert all(torch.equal(again.counts[k], v) for k, v in lmap.counts.items())
    assert again.accept_share("dep", 0.5, 2, "random") == lmap.accept_share("dep", 0.5, 2, "random")
    assert again.intervals == lmap.intervals


def test_a_rebuilt_layer_map_is_read_again(tiny_atlas, tmp_path):
    import os
    import shutil

    folder = tmp_path / "atlas"
    shutil.copytree(tiny_atlas, folder)
    assert read_layer_map(tmp_path / "none") is None and read_layer_map(None) is None
    first = read_layer_map(folder)
    assert read_layer_map(folder) is first  # read once while the files stay the same
    assert ensure_layer_map(folder) is first  # built already: no model needed
    changed = LayerMapData(first.hookpoints[:1], first.vocab, first.counts, first.base_rate,
                           first.n_tokens, first.fire_rate,
                           sae_fingerprint=first.sae_fingerprint)
    changed.save(folder / LAYER_MAP_FILE)
    stat = (folder / "layer_map.json").stat()
    os.utime(folder / "layer_map.json", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert read_layer_map(folder).hookpoints == first.hookpoints[:1]
