"""Search by label against a brute-force filter of hand-built counts; search by text against
dense SAE activations of the tiny atlas."""

import math

import pandas as pd
import pytest
import torch

from sae_core.encode import decoder_norms, encode_dense
from sae_core.explore.layermap import MAP_TASKS, LayerMapData
from sae_core.explore.search import (
    LOUD,
    LabelHit,
    TextHit,
    feature_labels,
    features_by_label,
    search_text,
)
from sae_core.hooks import run_captured

VOCAB = {"pos": ["NOUN", "PROPN", "VERB"], "dep": ["nsubj", "obj"], "ent": ["O", "GPE"],
         "shape": ["xxxx", "Xxxx"]}
BASE = {"pos": [0.5, 0.2, 0.3], "dep": [0.6, 0.4], "ent": [0.95, 0.05], "shape": [0.7, 0.3]}
HOOKS = ["layers.0", "layers.1"]


def _lmap(seed: int = 0, n_features: int = 60) -> LayerMapData:
    gen = torch.Generator().manual_seed(seed)
    counts = {}
    for h in HOOKS:
        for t in MAP_TASKS:
            c = torch.randint(0, 30, (n_features, len(VOCAB[t])), generator=gen)
            c[torch.rand(n_features, generator=gen) < 0.5, 0] = 0  # skewed rows
            c[:3] = 0  # dead features
            counts[f"sae/{h}/{t}"] = c
    base = {t: torch.tensor(r, dtype=torch.float64) for t, r in BASE.items()}
    return LayerMapData(HOOKS, VOCAB, counts, base, n_tokens=1000, fire_rate=0.01)


def _brute(lmap, layers, task, label, min_c, min_s, min_lift=0.0):
    lab = VOCAB[task].index(label)
    rows = []
    for layer in layers:
        for f, row in enumerate(lmap.counts[f"sae/layers.{layer}/{task}"].tolist()):
            support = sum(row)
            if support == 0:
                continue
            top = max(row)
            best = row.index(top)
            cons = top / support
            lift = cons / BASE[task][best]
            if best == lab and support >= max(min_s, 1) and cons >= min_c and lift >= min_lift:
                rows.append((layer, f, cons, support))
    return sorted(rows, key=lambda r: (-r[2], -r[3]))


@pytest.mark.parametrize("layer,task,label,min_c,min_s,min_lift", [
    (1, "pos", "PROPN", 0.5, 20, 0.0), (None, "pos", "NOUN", 0.0, 0, 0.0),
    (0, "ent", "GPE", 0.4, 1, 2.0), (None, "dep", "obj", 0.9, 50, 0.0),
])
def test_features_by_label_is_exactly_the_filter(layer, task, label, min_c, min_s, min_lift):
    lmap = _lmap()
    table = pd.DataFrame(features_by_label(lmap, layer, task, label, min_c, min_s,
                                           min_lift=min_lift), columns=LabelHit._fields)
    expect = _brute(lmap, [0, 1] if layer is None else [layer], task, label, min_c, min_s,
                    min_lift)
    got = list(zip(table["layer"], table["feature"], table["consistency"], table["support"],
                   strict=True))
    assert [(g[0], g[1], g[3]) for g in got] == [(e[0], e[1], e[3]) for e in expect]
    assert all(math.isclose(g[2], e[2]) for g, e in zip(got, expect, strict=True))
    assert (table["label"] == label).all()
    assert not ({0, 1, 2} & set(table["feature"]))  # dead features (NaN) never match


def test_features_by_label_min_consistency_zero_still_skips_dead():
    table = pd.DataFrame(features_by_label(_lmap(), None, "pos", "NOUN", 0.0, 0))
    assert len(table) and not table["consistency"].isna().any()


@pytest.mark.parametrize("kwargs,match", [
    (dict(layer=7, task="pos", label="NOUN"), "layer 7 is not in this layer map"),
    (dict(layer=0, task="color", label="NOUN"), "unknown task"),
    (dict(layer=0, task="pos", label="ADJ"), "unknown pos label"),
    (dict(layer=0, task="pos", label="NOUN", min_consistency=1.5), "min_consistency"),
])
def test_features_by_label_bad_input_is_a_message(kwargs, match):
    with pytest.raises(ValueError, match=match):
        features_by_label(_lmap(), **kwargs)


def test_feature_labels_pick_the_task_with_the_highest_lift():
    lmap = _lmap()
    for t in MAP_TASKS:
        lmap.counts[f"sae/layers.0/{t}"][5:7] = 0
    lmap.counts["sae/layers.0/pos"][5] = torch.tensor([6, 2, 2])  # NOUN 60%, lift 1.2
    lmap.counts["sae/layers.0/ent"][5] = torch.tensor([5, 5])  # O wins the tie: lift 0.53
    lmap.counts["sae/layers.0/dep"][5] = torch.tensor([2, 8])  # obj 80%, lift 2.0
    lmap.counts["sae/layers.0/shape"][5] = torch.tensor([1, 1])  # xxxx 50%, lift 0.7
    lmap.counts["sae/layers.0/shape"][6] = torch.tensor([0, 3])  # 3 firings: tentative
    lmap._stats.clear()
    labels = feature_labels(lmap, "layers.0", [5, 0, -1, 60])
    assert labels == ["obj (dep, 80% of 10)", "(never fired in the layer map)", "", ""]
    assert feature_labels(lmap, "layers.0", [6]) == ["Xxxx? (shape, 100% of 3)"]
    assert feature_labels(None, "layers.0", [5]) == [""]
    assert feature_labels(lmap, "layers.9", [5]) == [""]


def _dense_scores(loaded, view):
    ids = torch.tensor([[*view.prefix_ids, *view.token_ids]])
    acts = run_captured(loaded.lm, ids, loaded.hookpoints, bf16=True)
    out = {}
    with torch.inference_mode():
        for j, h in enumerate(loaded.hookpoints):
            x_TD = acts[h][0, len(view.prefix_ids):].float()
            a_TS = encode_dense(loaded.saes[h], x_TD)
            a_TS[view.flagged_TL[:, j]] = 0
            a_TS[x_TD.norm(dim=1) > LOUD * view.medians[j]] = 0  # loud tokens are skipped
            out[j] = a_TS
    return out


def test_search_text_ranks_every_layer_by_written_length_over_typical_norm(loaded):
    hits, view = search_text(loaded, "Paris is big , the cat sat", limit=12)
    table = pd.DataFrame(hits, columns=TextHit._fields)
    dense = _dense_scores(loaded, view)
    norms = [decoder_norms(loaded.saes[h]) for h in loaded.hookpoints]
    best = sorted((float(a_TS[:, f].max() * norms[j][f]) / view.medians[j]
                   for j, a_TS in dense.items() for f in range(a_TS.shape[1])
                   if a_TS[:, f].max() > 0), reverse=True)[:12]
    assert len(table) == 12
    assert table["score"].tolist() == pytest.approx(best, abs=5e-4)
    for row in table.itertuples():
        j = loaded.hookpoints.index(f"layers.{row.layer}")
        col = dense[j][:, row.feature]
        assert row.position == int(col.argmax()) and view.pieces[row.position] == row.token
        assert math.isclose(row.activation, float(col.max()), abs_tol=5e-3)
    assert set(table["layer"]) <= {0, 1, 2}


def test_search_text_with_reference_and_layer_filter(loaded):
    ones = {h: torch.ones(s.cfg.d_sae) for h, s in loaded.saes.items()}
    hits, _ = search_text(loaded, "the dog ran", layers=[2], reference=ones, limit=5)
    table = pd.DataFrame(hits, columns=TextHit._fields)
    assert (table["layer"] == 2).all()
    assert table["score"].tolist() == sorted(table["score"], reverse=True)
    assert all(math.isclose(s, a, abs_tol=0.011) for s, a in zip(table["score"],
                                                                  table["activation"],
                                                                  strict=True))


@pytest.mark.parametrize("text,kwargs,match", [
    ("", {}, "empty"), ("\x00 \x01", {}, "empty"),
    ("the cat", {"layers": [5]}, "not in this atlas"), ("the cat", {"limit": 0}, "limit"),
])
def test_search_text_bad_input_is_a_message(loaded, text, kwargs, match):
    with pytest.raises(ValueError, match=match):
        search_text(loaded, text, **kwargs)


def test_corpus_peaks_are_each_features_top_activation_in_the_index(loaded, tmp_path):
    import shutil

    from safetensors.torch import load_file

    from sae_core.activations import keep_mask
    from sae_core.atlas.layout import INDEX_DIR, INDEX_TOKENS_FILE
    from sae_core.explore.feature_index import build_feature_index
    from sae_core.explore.feature_stats import IndexConfig
    from sae_core.explore.search import corpus_peaks

    assert corpus_peaks(tmp_path) is None  # no index: no reference
    folder = tmp_path / "atlas"
    shutil.copytree(loaded.folder, folder)
    windows = load_file(str(loaded.folder / "labels.safetensors"))["windows"].long()[:6]
    factor = loaded.info.train_cfg["outlier_factor"]
    build_feature_index(loaded.lm, loaded.saes, loaded.medians, windows, folder,
                        outlier_factor=factor, cfg=IndexConfig(top_n=3, chunk=8),
                        fingerprint=loaded.fingerprint)
    peaks = corpus_peaks(folder)
    windows = load_file(str(folder / INDEX_DIR / INDEX_TOKENS_FILE))["tokens"].long()
    acts = run_captured(loaded.lm, windows, loaded.hookpoints)
    with torch.inference_mode():
        for h, sae in loaded.saes.items():
            keep = keep_mask(acts[h], loaded.medians[h], factor).reshape(-1, 1)
            dense = encode_dense(sae, acts[h].flatten(0, 1)) * keep
            assert torch.allclose(peaks[h], dense.max(0).values, atol=1e-5)
    hits, view = search_text(loaded, "Paris is big", reference=peaks, limit=8)
    for row in hits:
        peak = float(peaks[f"layers.{row.layer}"][row.feature])
        slot = view.top_idx_TLK[row.position, row.layer] == row.feature
        act = float(view.top_act_TLK[row.position, row.layer][slot][0])
        assert math.isclose(row.score, act / peak if peak > 0 else 0.0, abs_tol=1e-3)


def test_loud_tokens_are_skipped(loaded):
    from sae_core.explore.live import live_view
    from sae_core.explore.search import best_firings

    view = live_view(loaded, "Paris is big , the cat sat", top=4)
    assert best_firings(view, loud=0.0) == []
    ratio_T = view.norm_TL[:, 0] / view.medians[0]
    loudest = int(ratio_T.argmax())
    cut = float(ratio_T.sort(descending=True).values[1:3].mean())  # only the loudest is over
    rows = best_firings(view, loud=cut)
    assert rows and all(not (j == 0 and t == loudest) for _, j, _, t, _ in rows)
    assert any(j == 0 and t == loudest for _, j, _, t, _ in best_firings(view, loud=1e9))
