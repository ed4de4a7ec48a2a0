"""The atlas folder: what counts as built, reading it back, and the model check."""

import json
import shutil

import pytest

from sae_core.atlas.info import info_json
from sae_core.atlas.layout import (
    CHECKPOINT_DIR,
    check_fits,
    is_built,
    list_atlases,
    load_atlas,
    open_with,
    read_info,
    read_metrics,
    read_once,
)
from sae_core.config import SaeConfig
from sae_core.sae import Sae
from tests.conftest import tiny_lm


def test_a_finished_build_reads_back(tiny_atlas):
    info, metrics, saes, _ = load_atlas(tiny_atlas)
    assert info_json(info) == json.loads((tiny_atlas / "atlas.json").read_text())
    assert metrics == read_metrics(tiny_atlas) and list(metrics) == list(info.hookpoints)
    assert list(saes) == list(info.hookpoints) and not (tiny_atlas / CHECKPOINT_DIR).exists()
    assert str(tiny_atlas) in list_atlases(tiny_atlas.parent)


def test_loaded_atlas_properties_come_from_its_files(tiny_atlas):
    loaded = open_with(tiny_atlas, tiny_lm())
    assert loaded.hookpoints == list(read_info(tiny_atlas).hookpoints)
    assert loaded.medians == {h: s.metadata["median_norm"] for h, s in loaded.saes.items()}
    assert loaded.outlier_factor == read_info(tiny_atlas).train_cfg["outlier_factor"]
    assert loaded.corpus == read_info(tiny_atlas).corpus


def test_an_unfinished_folder_is_not_an_atlas(tiny_atlas, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(tiny_atlas, partial)
    (partial / "metrics.json").unlink()  # a build that stopped before writing metrics
    assert not is_built(partial) and list_atlases(tmp_path) == []
    with pytest.raises(FileNotFoundError, match="not a finished atlas"):
        load_atlas(partial)
    with pytest.raises(FileNotFoundError, match=r"no atlas\.json"):
        read_info(tmp_path / "missing")


def test_saes_of_another_width_or_layer_do_not_fit():
    lm = tiny_lm()  # d_model 32, 3 layers
    with pytest.raises(ValueError, match="d_in=48"):
        check_fits({"layers.1": Sae(SaeConfig(d_in=48, d_sae=96))}, lm)
    with pytest.raises(ValueError, match="out of range"):
        check_fits({"layers.5": Sae(SaeConfig(d_in=32, d_sae=64))}, lm)
    check_fits({"layers.2.mlp": Sae(SaeConfig(d_in=32, d_sae=64))}, lm)


def test_read_once_reloads_only_when_the_stamp_file_changes(tmp_path):
    import os

    stamp = tmp_path / "index.json"
    stamp.write_text("{}")
    calls = []
    load = lambda: calls.append(1) or len(calls)  # noqa: E731
    assert read_once(stamp, load) == 1 and read_once(stamp, load) == 1
    mtime = stamp.stat().st_mtime_ns
    os.utime(stamp, ns=(mtime, mtime + 10**9))  # rewritten
    assert read_once(stamp, load) == 2 and read_once(tmp_path / "." / "index.json", load) == 2
    with pytest.raises(FileNotFoundError):
        read_once(tmp_path / "missing.json", load)


def test_read_once_is_bounded_and_forgets_a_folder(tmp_path, monkeypatch):
    from sae_core.atlas import layout

    monkeypatch.setattr(layout, "_read", layout.OrderedDict())
    loads = []
    files = []
    for i in range(layout.READ_ONCE_LIMIT + 3):
        path = tmp_path / ("a" if i < 3 else "b") / f"{i}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(str(i))
        files.append(path)
        layout.read_once(path, lambda i=i: loads.append(i) or i)
    assert len(layout._read) == layout.READ_ONCE_LIMIT  # the 3 oldest went out
    assert layout.read_once(files[0], lambda: loads.append("again") or 0) == 0
    assert loads[-1] == "again"  # evicted, so read again
    assert layout.read_once(files[-1], lambda: loads.append("no") or -1) == len(files) - 1
    layout.forget_reads(tmp_path / "b")
    assert all(p.is_relative_to((tmp_path / "a").resolve()) for p in layout._read)
