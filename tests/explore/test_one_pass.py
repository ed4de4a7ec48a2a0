"""The pass after training: the held-out reconstruction, the feature index and the layer
evidence from one forward equal the same products built alone, each by its own pass."""

import shutil

import pytest
import torch

from sae_core.atlas.build import build_atlas
from sae_core.atlas.evaluate import reconstruction_stats
from sae_core.atlas.layout import INDEX_DIR, INDEX_META_FILE, heldout_ids, open_with, read_metrics
from sae_core.atomic import read_json
from sae_core.config import BuildConfig, TrainConfig
from sae_core.corpus import load_texts, token_windows
from sae_core.explore.evidence import PRODUCTS, ensure_layer_evidence, missing_evidence
from sae_core.explore.feature_index import ensure_feature_index
from sae_core.explore.one_pass import after_training
from sae_core.jobs.stages import STAGES, ready_parts
from tests.tiny import tiny_lm, write_tiny_corpus


@pytest.fixture(scope="module")
def one_pass_atlas(tmp_path_factory):
    root = tmp_path_factory.mktemp("one_pass")
    corpus = write_tiny_corpus(root / "corpus.jsonl")
    lm = tiny_lm()
    cfg = TrainConfig(expansion=2, k=4, batch_tokens=64, lm_batch_tokens=64, bf16=False)
    out = build_atlas(root / "atlas", data=BuildConfig(corpus=str(corpus), seq_len=16,
                                                       held_out=8),
                      cfg=cfg, lm=lm, after=after_training)
    return out, lm


def _files(folder):
    """Every product file's bytes, but index.json (it holds timings)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and p.name != INDEX_META_FILE
            and (p.parent.name == INDEX_DIR or any(p.name.startswith(q.file.split(".")[0])
                                                   for q in PRODUCTS))}


def test_the_build_writes_every_product_of_its_pass(one_pass_atlas):
    folder, _ = one_pass_atlas
    assert ready_parts(folder) == tuple(s.name for s in STAGES[:3])  # presets come later
    assert missing_evidence(folder) == []
    source = read_json(folder / INDEX_DIR / INDEX_META_FILE)["source"]
    assert source["heldout_windows"] == 8 and source["labelled_windows"] > 0


def test_one_pass_equals_each_product_built_alone(one_pass_atlas, tmp_path):
    folder, lm = one_pass_atlas
    alone = tmp_path / "alone"
    shutil.copytree(folder, alone)
    (alone / INDEX_DIR / INDEX_META_FILE).unlink()
    for product in PRODUCTS:
        (alone / product.file).with_suffix(".json").unlink()
    assert "feature index" not in ready_parts(alone) and "layer map" not in ready_parts(alone)
    ensure_feature_index(alone, lm=lm)
    assert set(ensure_layer_evidence(alone, lm=lm)) == {"pass", *(p.name for p in PRODUCTS)}
    one, each = _files(folder), _files(alone)
    assert len(one) >= 2 * len(PRODUCTS) + 3  # each product's files, the index's 3 layers
    assert one.keys() == each.keys()
    assert [name for name in one if one[name] != each[name]] == []
    meta = (read_json(d / INDEX_DIR / INDEX_META_FILE) for d in (folder, alone))
    assert len({(m["windows"], str(m["source"]), str(m["layers"])) for m in meta}) == 1


def test_the_held_out_reconstruction_equals_its_own_pass(one_pass_atlas):
    folder, lm = one_pass_atlas
    atlas = open_with(folder, lm)
    windows = token_windows(lm.tokenizer, load_texts(atlas.corpus), atlas.info.seq_len)
    test_w = windows[heldout_ids(atlas.info, windows)]
    stats = reconstruction_stats(lm, atlas.saes, test_w, atlas.medians,
                                 outlier_factor=atlas.outlier_factor, batch=8)
    metrics = read_metrics(folder)
    for h, s in stats.items():
        assert metrics[h]["heldout_tokens"] == s.n > 0
        assert metrics[h]["fvu"] == pytest.approx(s.fvu(), rel=1e-12)
        assert metrics[h]["l0"] == pytest.approx(s.l0(), rel=1e-12)
        assert metrics[h]["dead_frac_heldout"] == s.dead_fraction()
    assert torch.isfinite(torch.tensor([m["ce_recovered"] for m in metrics.values()])).all()


def test_a_control_atlas_rebuilds_its_products_through_its_control_model(tmp_path):
    """Handed the real model (as the build worker and the app are), the products a control
    atlas rebuilds alone equal those its build wrote through the control model."""
    corpus = write_tiny_corpus(tmp_path / "corpus.jsonl")
    cfg = TrainConfig(expansion=2, k=4, batch_tokens=64, lm_batch_tokens=64, bf16=False)
    data = BuildConfig(corpus=str(corpus), seq_len=16, held_out=8, control="random-init")
    folder = build_atlas(tmp_path / "rand", data=data, cfg=cfg, lm=tiny_lm(),
                         after=after_training)
    alone = tmp_path / "alone"
    shutil.copytree(folder, alone)
    for product in PRODUCTS:
        (alone / product.file).with_suffix(".json").unlink()
    ensure_layer_evidence(alone, lm=tiny_lm())
    one, each = _files(folder), _files(alone)
    assert [name for name in one if one[name] != each[name]] == []
    assert open_with(alone, tiny_lm()).lm.control == "random-init"
