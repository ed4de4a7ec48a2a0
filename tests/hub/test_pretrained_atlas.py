"""A Hub set written as an atlas feeds every reader; a failed load leaves nothing behind."""

import json
import math

import pytest
import torch

from sae_core.atlas.layout import is_built, list_atlases
from sae_core.explore.feature_index import ensure_feature_index
from sae_core.explore.layermap import ensure_layer_map
from sae_core.explore.live import live_view
from sae_core.hub import pretrained_atlas as hub_atlas
from sae_core.hub.fetch import HubError
from tests.hub.repos import REV, raw_saelens, two_layer_repo
from ui.saes import tab as saes_ui
from ui.serving import session


def test_pretrained_atlas_feeds_every_reader(tmp_path, tiny_atlas):
    corpus = json.loads((tiny_atlas / "atlas.json").read_text())["corpus"]
    cache, root = two_layer_repo(tmp_path), tmp_path / "atlas"
    reports = []
    out, warns = hub_atlas.load_pretrained_atlas(
        "org/pair", "L0,L1", model="tiny-llama", lm=session.model("tiny-llama"), name="pair",
        root=root, cache_dir=cache, corpus=corpus, seq_len=16, held_out=8,
        report=lambda m, f: reports.append(m))
    assert out == root / "pair" and is_built(out) and warns == ()
    assert sorted(p.name for p in root.iterdir()) == [".pair.lock", "pair"]  # no staging left
    assert any("fetching L1" in m for m in reports)
    loaded = session.open_atlas(out)
    info = loaded.info
    assert info.model == "tiny-llama" and list(info.hookpoints) == ["layers.0", "layers.2"]
    assert info.source["repo_id"] == "org/pair" and info.source["revision"] == REV
    assert info.source["paths"] == {"layers.0": "L0", "layers.2": "L1"}
    assert all(m > 0 for m in loaded.medians.values())
    for h, m in loaded.metrics.items():
        assert m["fvu"] >= 0 and 0 < m["l0"] <= 4 and m["heldout_tokens"] > 0, h
        assert math.isfinite(m["ce_recovered"])
    # The saved SAEs are the Hub tensors, untouched.
    t = raw_saelens(seed=1)
    assert torch.equal(loaded.saes["layers.2"].W_enc, t["W_enc"])
    assert torch.equal(loaded.saes["layers.2"].b_dec, t["b_dec"])
    lmap = ensure_layer_map(out, lm=loaded.lm)
    assert lmap.hookpoints == ["layers.0", "layers.2"]
    index = ensure_feature_index(out, lm=loaded.lm)  # the Features tab's index
    assert index["source"]["heldout_windows"] == 8
    view = live_view(loaded, "the cat sat on the mat")  # the Live view tab
    assert view.hookpoints == ("layers.0", "layers.2")
    md, table, _ = saes_ui.atlas_summary(str(out))
    assert "org/pair" in md and table["hookpoint"].tolist() == ["layers.0", "layers.2"]
    assert str(out) in list_atlases(root)
    with pytest.raises(HubError, match="already exists"):
        hub_atlas.load_pretrained_atlas("org/pair", "L0", model="tiny-llama", name="pair",
                                        lm=session.model("tiny-llama"), root=root,
                                        cache_dir=cache)


def test_failures_leave_nothing_behind(tmp_path, tiny_atlas, monkeypatch):
    corpus = json.loads((tiny_atlas / "atlas.json").read_text())["corpus"]
    cache, root = two_layer_repo(tmp_path), tmp_path / "atlas"
    kw = dict(model="tiny-llama", lm=session.model("tiny-llama"), root=root, cache_dir=cache,
              corpus=corpus, seq_len=16, held_out=8)
    with pytest.raises(HubError, match=r"missing-folder/cfg\.json"):
        hub_atlas.load_pretrained_atlas("org/pair", "L0, missing-folder", name="a", **kw)

    def broken(*args, **kwargs):
        raise RuntimeError("evaluation failed")

    monkeypatch.setattr(hub_atlas, "evaluate_atlas", broken)
    with pytest.raises(RuntimeError, match="evaluation failed"):
        hub_atlas.load_pretrained_atlas("org/pair", "L0", name="b", **kw)
    assert not root.exists() or list(root.iterdir()) == []


def test_the_token_reaches_the_model_load_and_every_file(tmp_path, monkeypatch):
    """token=False (send none) goes to the model load and to each hf_hub_download."""
    from sae_core.hub import fetch as hub_fetch
    from tests.conftest import tiny_lm

    cache, seen = two_layer_repo(tmp_path), []
    real_download = hub_fetch.hf_hub_download
    monkeypatch.setattr(hub_fetch, "hf_hub_download", lambda *a, **kw: seen.append(
        ("file", kw["token"])) or real_download(*a, **kw))

    def load_named(name, token=None):
        seen.append((name, token))
        return tiny_lm()

    monkeypatch.setattr(hub_atlas, "load_named", load_named)
    monkeypatch.setattr(hub_atlas, "write_pretrained_atlas", lambda *a, **kw: ("out", ()))
    hub_atlas.load_pretrained_atlas("org/pair", "L0,L1", model="tiny-llama", root=tmp_path,
                                    cache_dir=cache, token=False)
    assert seen == [("tiny-llama", False)] + [("file", False)] * 4
