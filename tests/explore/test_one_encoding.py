"""One set of numbers across the views: the feature index, the layer map, the live view,
search and concept scores read features through one encoding path (sae_core/encode.py)."""

import dataclasses

import numpy as np
import pytest
import torch

from sae_core.atlas.layout import LoadedAtlas
from sae_core.config import SaeConfig
from sae_core.encode import BF16
from sae_core.explore import concepts
from sae_core.explore.concepts import find_concept_features
from sae_core.explore.feature_index import build_feature_index, collect_codes
from sae_core.explore.feature_page import open_index
from sae_core.explore.feature_stats import IndexConfig
from sae_core.explore.labels import LabelledWindows
from sae_core.explore.layermap import MAP_TASKS, collect_firings, compute_layer_map
from sae_core.explore.live import live_view
from sae_core.explore.search import corpus_peaks, search_text
from sae_core.hooks import run_captured
from sae_core.sae import Sae
from tests.conftest import save_as_atlas
from tests.counts import count

TEXT = "the cat sat on the mat . Paris is big , a dog ran"


def _sae(hookpoint: str, d_sae: int, *, b_enc: torch.Tensor, scale: float = 0.0,
         architecture: str = "relu", median: float = 1e9, seed: int = 0) -> Sae:
    """A 32-wide SAE of the tiny model: latent f is b_enc[f] + a small token-dependent term
    (|term| <= scale / 1e3 for tokens of norm <= 1e3), so b_enc decides which latents fire."""
    sae = Sae(SaeConfig(d_in=32, d_sae=d_sae, architecture=architecture, k=min(4, d_sae),
                        hookpoint=hookpoint, apply_b_dec_to_input=False))
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(d_sae, 32, generator=gen)
    with torch.no_grad():
        sae.W_enc_SD.copy_(scale / 1e3 * w / w.norm(dim=1, keepdim=True))
        sae.b_enc.copy_(b_enc)
        sae.W_dec.copy_(torch.randn(d_sae, 32, generator=gen))
    sae.metadata = {"median_norm": median}
    return sae


def _wide_relu(loaded: LoadedAtlas) -> LoadedAtlas:
    """The tiny atlas with a ReLU SAE at layers.1 on which 80 of 100 latents fire per token."""
    b = torch.where(torch.arange(100) < 80, 1.0, -1.0)
    sae = _sae("layers.1", 100, b_enc=b, scale=0.5, median=loaded.medians["layers.1"])
    return dataclasses.replace(loaded, saes=dict(loaded.saes) | {"layers.1": sae})


@pytest.mark.parametrize("variant", ["trained topk", "wide relu"])
def test_index_layer_map_and_live_view_read_the_same_numbers(loaded, variant):
    atlas = loaded if variant == "trained topk" else _wide_relu(loaded)
    view = live_view(atlas, TEXT, top=None)  # every firing feature
    skip = len(view.prefix_ids)
    window = torch.tensor([[*view.prefix_ids, *view.token_ids]])
    codes = collect_codes(atlas.lm, atlas.saes, atlas.medians, window,
                          outlier_factor=atlas.outlier_factor, cfg=IndexConfig())
    labels = {t: np.zeros(window.shape, dtype=np.int16) for t in MAP_TASKS}
    data = LabelledWindows(window, labels, {t: ["x"] for t in MAP_TASKS})
    firings = collect_firings(atlas.lm, atlas.saes, atlas.medians, data,
                              outlier_factor=atlas.outlier_factor)
    n_checked = 0
    for j, h in enumerate(atlas.hookpoints):
        vals, idx, n_kept = codes[h]
        kept_T = (vals > 0).any(dim=1)[skip:]
        assert torch.equal(kept_T, ~view.flagged_TL[:, j]) and n_kept == int(kept_T.sum())
        f = firings[h]
        kept_rows = iter(range(len(f.idx_NK)))
        assert len(f.idx_NK) == n_kept
        for t in range(view.n_tokens):
            from_index = {int(i): float(v) for v, i in zip(vals[skip + t], idx[skip + t],
                                                         strict=True) if v > 0}
            from_view = {int(i): float(v) for v, i in zip(view.top_act_TLK[t, j],
                                                        view.top_idx_TLK[t, j], strict=True)
                         if i >= 0}
            assert from_index == from_view  # same features, same activations, exactly
            if kept_T[t]:
                row = next(kept_rows)
                assert set(f.idx_NK[row][f.valid_NK[row]].tolist()) == set(from_index)
                n_checked += 1
        if variant == "wide relu" and h == "layers.1":
            assert all(len(set(idx[skip + t][vals[skip + t] > 0].tolist())) == 80
                       for t in range(view.n_tokens) if kept_T[t])
    assert n_checked > 30
    count("tokens read identically by index, layer map and live view", n_checked)


def _planted_pair(loaded: LoadedAtlas, tmp_path, word: str = "Paris") -> LoadedAtlas:
    """A one-layer atlas whose ReLU SAE has two latents firing only on `word`: latent 0 at
    twice latent 1's activation, with decoder rows of norm 1 and 3, so latent 1 writes 1.5x
    as far into the residual stream."""
    h = "layers.1"
    tok = loaded.lm.tokenizer
    texts = [t.replace("{c}", word) for t in TEMPLATES] + list(NEUTRAL)
    rows = [tok(t).input_ids for t in texts] + [[tok.eos_token_id, *tok(TEXT).input_ids]]
    L = max(map(len, rows))
    ids = torch.tensor([r + [0] * (L - len(r)) for r in rows])
    x = run_captured(loaded.lm, ids, [h], bf16=BF16)[h].float()
    on = ids == tok.convert_tokens_to_ids(word)
    u = x[on].mean(0) - x[~on].mean(0)
    u = u / u.norm()
    proj = x @ u
    lo, hi = float(proj[~on].max()), float(proj[on].min())
    assert hi - lo > 0.1 * abs(hi)  # separable with a margin: padding and batching move little
    cut = (lo + hi) / 2
    sae = Sae(SaeConfig(d_in=32, d_sae=2, architecture="relu", hookpoint=h,
                        apply_b_dec_to_input=False))
    v = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sae.W_enc_SD.copy_(torch.stack([100 * u, 50 * u]))
        sae.b_enc.copy_(torch.tensor([-100 * cut, -50 * cut]))
        sae.W_dec.copy_(v / v.norm(dim=1, keepdim=True) * torch.tensor([[1.0], [3.0]]))
    sae.metadata = {"median_norm": loaded.medians[h]}
    return LoadedAtlas(tmp_path / "pair", loaded.info, {}, {h: sae}, loaded.lm)


TEMPLATES = ("the dog sat on {c} .", "a cat ran on {c} , the mat is big",
             "the dog is on {c} .", "a mat , a {c} , a dog")
NEUTRAL = ("the cat sat on the mat .", "a dog ran , the mat is big .", "the dog is big .",
           "a cat is on a mat , the dog ran .")


def test_scores_rank_by_activation_times_decoder_norm(loaded, tmp_path, monkeypatch):
    pair = _planted_pair(loaded, tmp_path)
    view = live_view(pair, TEXT, top=2)
    t = view.pieces.index(" Paris") if " Paris" in view.pieces else view.pieces.index("Paris")
    acts = dict(zip(view.top_idx_TLK[t, 0].tolist(), view.top_act_TLK[t, 0].tolist(),
                    strict=True))
    assert set(acts) == {0, 1} and acts[0] == pytest.approx(2 * acts[1], rel=2e-2)
    assert int(view.strongest()[0][t, 0]) == 1  # smaller activation, longer write
    assert float(view.top_write_TLK[t, 0, 0]) == pytest.approx(3 * acts[1], rel=1e-5)
    assert (view.top_idx_TLK[torch.arange(view.n_tokens) != t] == -1).all()

    hits, _ = search_text(pair, TEXT, limit=5)
    assert [h.feature for h in hits] == [1, 0]
    assert hits[0].score == pytest.approx(3 * acts[1] / loaded.medians["layers.1"], rel=1e-5)
    assert hits[0].score / hits[1].score == pytest.approx(1.5, rel=2e-2)

    monkeypatch.setattr(concepts, "TEMPLATES", TEMPLATES)
    monkeypatch.setattr(concepts, "NEUTRAL", NEUTRAL)
    concepts._neutral.clear()
    try:
        found = find_concept_features(pair, "Paris", top=5, per_layer=2)
    finally:
        concepts._neutral.clear()
    assert [c.feature for c in found] == [1, 0]
    assert found[0].concept_act < found[1].concept_act  # ranked by write, not activation
    assert found[0].score / found[1].score == pytest.approx(1.5, rel=2e-2)


def _windows(n: int = 6, seq: int = 8) -> torch.Tensor:
    return torch.randint(3, 16, (n, seq), generator=torch.Generator().manual_seed(3))


def test_mixed_widths_give_fire_rates_equal_to_hand_counts(loaded, tmp_path):
    """layers.0 has 8 latents, 3 firing on every token; layers.2 has 16, 5 firing."""
    saes = {"layers.0": _sae("layers.0", 8, b_enc=torch.tensor([1.0] * 3 + [-1.0] * 5)),
            "layers.2": _sae("layers.2", 16, b_enc=torch.tensor([1.0] * 5 + [-1.0] * 11))}
    medians = {h: 1e9 for h in saes}  # keeps every position >= 1
    windows = _windows()
    n_tokens = 6 * 7
    data = LabelledWindows(windows, {t: (windows.numpy() % 2).astype(np.int16)
                                     for t in MAP_TASKS}, {t: ["a", "b"] for t in MAP_TASKS})
    lmap = compute_layer_map(loaded.lm, saes, medians, data, batch=4)
    assert lmap.n_tokens == n_tokens
    assert lmap.fire_rate == pytest.approx((3 / 8 + 5 / 16) / 2, abs=1e-12)
    for h, n_on in (("layers.0", 3), ("layers.2", 5)):
        support = lmap.counts[f"sae/{h}/pos"].sum(1)
        assert support.tolist() == [n_tokens] * n_on + [0] * (saes[h].cfg.d_sae - n_on)
        random = lmap.counts[f"random/{h}/pos"].sum(1)  # controls: the SAE's supports
        assert sorted(random.tolist()) == sorted(support.tolist())

    out = tmp_path / "mixed"
    meta = build_feature_index(loaded.lm, saes, medians, windows, out, outlier_factor=10.0,
                               cfg=IndexConfig(top_n=3, chunk=4),
                               fingerprint=save_as_atlas(out, saes))
    index = open_index(out)
    for h, n_on in (("layers.0", 3), ("layers.2", 5)):
        density = index.layer_stats(h)["n_fire"].float() / meta["layers"][h]["tokens"]
        assert density.tolist() == [1.0] * n_on + [0.0] * (saes[h].cfg.d_sae - n_on)
        assert meta["layers"][h]["dead"] == saes[h].cfg.d_sae - n_on
    info = dataclasses.replace(loaded.info, hookpoints=tuple(saes))
    mixed = LoadedAtlas(out, info, {}, saes, loaded.lm)
    hits, _ = search_text(mixed, TEXT, reference=corpus_peaks(out), limit=20)
    assert sorted((h.layer, h.feature) for h in hits) == \
        [(0, f) for f in range(3)] + [(2, f) for f in range(5)]


@pytest.mark.parametrize("architecture", ["relu", "jumprelu"])
def test_density_counts_every_firing_latent_beyond_64(loaded, tmp_path, architecture):
    """80 of 100 latents fire on every token: all 80 count, in the index and the layer map."""
    b = torch.where(torch.arange(100) < 80, 1.0, -1.0)
    sae = _sae("layers.1", 100, b_enc=b, scale=0.5, architecture=architecture)
    if architecture == "jumprelu":  # a threshold that silences latents 70..79 as well
        with torch.no_grad():
            sae.threshold.copy_(torch.where(torch.arange(100) < 70, 0.0, 5.0))
    n_on = 80 if architecture == "relu" else 70
    saes, medians, windows = {"layers.1": sae}, {"layers.1": 1e9}, _windows()
    meta = build_feature_index(loaded.lm, saes, medians, windows, tmp_path,
                               outlier_factor=10.0, cfg=IndexConfig(top_n=3, chunk=4),
                               fingerprint=save_as_atlas(tmp_path, saes))
    n_fire = open_index(tmp_path).layer_stats("layers.1")["n_fire"]
    tokens = meta["layers"]["layers.1"]["tokens"]
    assert tokens == 6 * 7
    assert n_fire.tolist() == [tokens] * n_on + [0] * (100 - n_on)
    data = LabelledWindows(windows, {t: np.zeros(windows.shape, dtype=np.int16)
                                     for t in MAP_TASKS}, {t: ["x"] for t in MAP_TASKS})
    lmap = compute_layer_map(loaded.lm, saes, medians, data)
    assert lmap.fire_rate == pytest.approx(n_on / 100, abs=1e-12)
    count("latents per token above the old cap of 64 counted (relu + jumprelu)", n_on - 64)
