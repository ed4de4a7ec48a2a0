"""Nothing stale, nothing half-written: rebuilt atlases are served as rebuilt, damaged files
are reported and never loaded, a full disk keeps the previous atlas whole, one writer at a
time, and evaluation reads held-out windows only."""

import errno
import os
import shutil
import subprocess

import pytest
import torch

from sae_core import atomic
from sae_core.atlas.build import build_atlas
from sae_core.atlas.fingerprint import file_sha256
from sae_core.atlas.layout import (
    current_fingerprint,
    forget_reads,
    heldout_ids,
    index_dir,
    load_atlas,
    read_info,
)
from sae_core.atlas.writing import AtlasBusy, atlas_lock
from sae_core.atomic import CorruptFile, DiskFull
from sae_core.config import BuildConfig, TrainConfig
from sae_core.corpus import load_texts, token_windows
from sae_core.explore import concepts
from sae_core.explore.concepts import find_concept_features
from sae_core.explore.feature_index import ensure_feature_index, has_feature_index, read_index_meta
from sae_core.explore.feature_page import feature_page
from sae_core.explore.layermap import (
    LAYER_MAP_FILE,
    ensure_layer_map,
    has_layer_map,
    read_layer_map,
)
from sae_core.hooks import run_captured
from sae_core.train.loop import train_saes
from tests.conftest import tiny_lm
from tests.counts import count
from ui.api import AtlasApi
from ui.layer_map.view import present_labels
from ui.serving import session

CFG = TrainConfig(expansion=2, k=4, batch_tokens=64, lm_batch_tokens=64, bf16=False)


def _build(folder, corpus, seed=0):
    data = BuildConfig(corpus=str(corpus), seq_len=16, held_out=8)
    return build_atlas(folder, data=data, cfg=TrainConfig(**{**CFG.__dict__, "seed": seed}),
                       lm=session.model("tiny-llama"))


@pytest.fixture
def atlas(tiny_atlas, tmp_path):
    """A private copy of the tiny atlas (SAEs, layer map) with its feature index."""
    folder = tmp_path / "tiny"
    shutil.copytree(tiny_atlas, folder)
    ensure_feature_index(folder, lm=session.model("tiny-llama"))
    return folder


def _digests(folder) -> dict:
    return {str(p.relative_to(folder)): file_sha256(p) for p in folder.rglob("*") if p.is_file()}


def test_a_rebuild_with_another_seed_is_what_the_app_shows(atlas):
    lm = session.model("tiny-llama")
    old = session.open_atlas(atlas)
    old_map = read_layer_map(atlas)
    find_concept_features(old, "cat")  # neutral statistics of the old SAEs cached
    h = old.hookpoints[1]
    api = AtlasApi(lambda: [str(atlas)])  # the app's endpoints, open before the rebuild
    before = api.layer_map(atlas.name), api.feature_page(atlas.name, 1, 0)
    _build(atlas, read_info(atlas).corpus, seed=1)
    assert not has_layer_map(atlas) and not has_feature_index(atlas)  # went with the old SAEs
    ensure_layer_map(atlas, lm=lm)
    ensure_feature_index(atlas, lm=lm)
    new = session.open_atlas(atlas)
    assert new is not old and new.fingerprint == current_fingerprint(atlas) != old.fingerprint
    assert not torch.equal(new.saes[h].W_dec, old.saes[h].W_dec)
    assert read_layer_map(atlas).sae_fingerprint == new.fingerprint != old_map.sae_fingerprint
    assert read_index_meta(atlas)["sae_fingerprint"] == new.fingerprint
    find_concept_features(new, "cat")
    assert concepts._neutral[atlas.resolve()][0] == new.fingerprint  # the old ones dropped
    tokens = atomic.load_tensors(index_dir(atlas) / "tokens.safetensors")["tokens"].long()
    acts = run_captured(lm, tokens, [h], bf16=False)[h]
    pages = [feature_page(new, h, f) for f in range(new.saes[h].cfg.d_sae)]
    top = [(p.feature, s) for p in pages for s in p.top[:1]]
    assert len(top) > 4
    for f, s in top:  # the page shows the new SAE's activations, not the old one's
        x = acts[s.window, s.position][None]
        with torch.no_grad():
            assert s.value == pytest.approx(float(new.saes[h].encode(x)[0, f]), rel=1e-2)
        shown = api.feature_page(atlas.name, 1, f)["top_snippets"][0]["activation"]
        assert shown == s.value
    after = api.layer_map(atlas.name)
    assert after["counts"] != before[0]["counts"]  # the new SAEs' map, as the library reads it
    lmap = read_layer_map(atlas)
    heat = lmap.heatmap("pos", after["threshold"], after["min_support"], "sae",
                        after["min_lift"])[:, present_labels(lmap, "pos")]
    assert after["counts"] == heat.tolist()
    assert api.feature_page(atlas.name, 1, 0) != before[1]


def test_derived_files_of_other_saes_are_never_served(atlas, tmp_path):
    before = read_layer_map(atlas)
    other = tmp_path / "other"
    _build(other, read_info(atlas).corpus, seed=2)
    for name in (LAYER_MAP_FILE, "layer_map.json", "features"):  # copied in by hand
        src = atlas / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, other / name)
    assert read_layer_map(other) is None and not has_feature_index(other)
    assert before is not None and has_feature_index(atlas)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path):
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = [
    ("layers.0/sae_weights.safetensors", _truncate, "load"),
    ("layers.0/sae_weights.safetensors", _flip, "load"),
    ("layers.1/cfg.json", _truncate, "load"),
    ("atlas.json", _truncate, "load"),
    ("metrics.json", _truncate, "load"),
    (LAYER_MAP_FILE, _truncate, "layer map"),
    ("layer_map.json", _truncate, "layer map"),
    ("features/index.json", _truncate, "index"),
    ("features/layers.1.safetensors", _flip, "index"),
    ("features/tokens.safetensors", _truncate, "index"),
]


@pytest.mark.parametrize("rel, damage, part", DAMAGE, ids=[f"{r}-{d.__name__}"
                                                         for r, d, _ in DAMAGE])
def test_a_damaged_file_is_reported_and_never_loaded(atlas, rel, damage, part):
    lm = session.model("tiny-llama")
    whole = read_layer_map(atlas), read_index_meta(atlas)
    damage(atlas / rel)
    forget_reads(atlas)  # as a new process finds it (this one holds the whole map in memory)
    count("damaged files detected")
    if part == "load":
        with pytest.raises(CorruptFile, match=r"corrupt|truncated|not the file|damaged"):
            load_atlas(atlas)
        with pytest.raises(CorruptFile):
            session.open_atlas(atlas)
        return
    if part == "layer map":
        with pytest.raises(CorruptFile):
            read_layer_map(atlas)
        assert not has_layer_map(atlas)
        rebuilt = ensure_layer_map(atlas, lm=lm)  # built again from the SAEs
        old = whole[0].counts
        assert [k for k in old if not torch.equal(rebuilt.counts[k], old[k])] == []
    else:
        assert not has_feature_index(atlas)
        rebuilt = ensure_feature_index(atlas, lm=lm)
        assert rebuilt["files"] == whole[1]["files"]  # the same index, byte for byte


def test_a_full_disk_keeps_the_previous_atlas_whole(atlas, monkeypatch):
    before = _digests(atlas)
    real = atomic.write_atomic

    def full_at_metrics(path, write):
        def no_space(tmp):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, no_space if path.name == "metrics.json" else write)

    monkeypatch.setattr(atomic, "write_atomic", full_at_metrics)
    with pytest.raises(DiskFull, match=r"the disk is full: could not write .*metrics\.json"):
        _build(atlas, read_info(atlas).corpus, seed=3)
    assert _digests(atlas) == before  # every file of the previous atlas as it was
    assert session.open_atlas(atlas).fingerprint == current_fingerprint(atlas)
    assert not list((atlas / "..").glob(f".{atlas.name}.*.tmp"))  # no temporary file left


@pytest.mark.parametrize("staging_finished", [True, False])
def test_a_swap_cut_short_is_finished_or_undone(atlas, tmp_path, staging_finished):
    """A crash between the two renames of a swap: the next build puts the finished new
    folder in place (and stops there), or brings the previous atlas back and builds."""
    corpus = read_info(atlas).corpus
    new = _build(tmp_path / "new", corpus, seed=6)
    before = _digests(atlas)
    staging = atlas.parent / f".{atlas.name}.building"
    atlas.rename(atlas.parent / f".{atlas.name}.old")
    shutil.copytree(new, staging)
    if not staging_finished:
        (staging / "atlas.json").unlink()
    _build(atlas, corpus, seed=6)
    assert not staging.exists() and not (atlas.parent / f".{atlas.name}.old").exists()
    got = current_fingerprint(atlas)
    assert got == current_fingerprint(new)  # the same seed either way
    if staging_finished:
        assert _digests(atlas) == _digests(new)  # moved in as it was, not built again
    else:
        assert before != _digests(atlas)


def test_one_writer_at_a_time(atlas):
    with atlas_lock(atlas):
        with pytest.raises(AtlasBusy, match="another build is writing"):
            _build(atlas, read_info(atlas).corpus, seed=4)
        (atlas / "layer_map.json").unlink()
        with pytest.raises(AtlasBusy):
            ensure_layer_map(atlas, lm=session.model("tiny-llama"))
    ensure_layer_map(atlas, lm=session.model("tiny-llama"))  # free again


def test_held_out_windows_are_stored_and_never_trained_on(atlas, monkeypatch):
    info = read_info(atlas)
    windows = token_windows(tiny_lm().tokenizer, load_texts(info.corpus), info.seq_len)
    ids = heldout_ids(info, windows)
    assert ids.tolist() == list(info.heldout_ids) and len(ids) == info.heldout_windows == 8
    trained = []
    monkeypatch.setattr("sae_core.atlas.build.train_saes",
                        lambda lm, w, *a, **k: trained.append(w) or train_saes(lm, w, *a, **k))
    _build(atlas, info.corpus, seed=5)
    is_train = torch.ones(len(windows), dtype=torch.bool)
    is_train[ids] = False
    assert torch.equal(trained[0], windows[is_train])  # every window but the held-out ones
    with pytest.raises(ValueError, match="the corpus now gives 10 windows"):
        heldout_ids(info, windows[:10])


def test_damaged_json_and_safetensors_read_as_corrupt_files(tmp_path):
    (tmp_path / "x.json").write_text('{"a": ')
    with pytest.raises(CorruptFile, match=r"x\.json is corrupt or truncated"):
        atomic.read_json(tmp_path / "x.json")
    atomic.save_tensors(tmp_path / "x.safetensors", {"w": torch.ones(4)})
    _truncate(tmp_path / "x.safetensors")
    with pytest.raises(CorruptFile, match=r"x\.safetensors is corrupt or truncated"):
        atomic.load_tensors(tmp_path / "x.safetensors")


def test_the_lock_clears_what_killed_writers_left_and_only_that(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()  # a finished child: its pid names no process now
    orphan = tmp_path / "features" / f".layers.1.safetensors.{dead.pid}.abc123.tmp"
    live = tmp_path / "features" / f".index.json.{os.getpid()}.def456.tmp"
    orphan.parent.mkdir()
    orphan.write_bytes(b"half")
    live.write_bytes(b"being written")
    assert atomic.orphaned_temporaries(tmp_path) == [orphan]
    with atlas_lock(tmp_path):
        assert not orphan.exists() and live.exists()
