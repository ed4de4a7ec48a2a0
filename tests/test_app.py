"""The app over a tiny atlas built end to end from a tiny random model."""

import json

import pytest

import app
from sae_core.atlas import build_atlas, ensure_layer_map
from sae_core.config import TrainConfig
from tests.conftest import WORDS, tiny_lm
from ui import layer_map, saes


@pytest.fixture(scope="module")
def tiny_atlas(tmp_path_factory):
    root = tmp_path_factory.mktemp("atlas")
    corpus = root / "corpus.jsonl"
    lines = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(40)) for i in range(60)]
    corpus.write_text("\n".join(json.dumps({"text": t}) for t in lines))
    lm = tiny_lm()
    cfg = TrainConfig(expansion=2, k=4, batch_tokens=64, bf16=False)
    out = build_atlas(root / "tiny", corpus=str(corpus), cfg=cfg, seq_len=16, held_out=8, lm=lm)
    ensure_layer_map(out, lm=lm)
    return out


def test_saes_tab_summary(tiny_atlas):
    md, table, fig = saes.atlas_summary(str(tiny_atlas))
    assert "3 SAEs" in md
    assert table["hookpoint"].tolist() == ["layers.0", "layers.1", "layers.2"]
    assert (table["FVU"] >= 0).all() and (table["L0"] <= 4).all()
    assert len(fig.data) == 3


def test_missing_atlas_is_a_message_not_a_crash(tmp_path):
    md, table, fig = saes.atlas_summary(str(tmp_path / "nope"))
    assert md == "No atlas selected." and table.empty and fig is None


def test_app_builds_with_layer_map(tiny_atlas):
    lmap = layer_map.load_layer_map(tiny_atlas)
    assert lmap is not None and lmap.hookpoints == ["layers.0", "layers.1", "layers.2"]
    demo = app.build_app(tiny_atlas)
    assert demo is not None
