"""atlas.json as a typed record: a round trip keeps the file's bytes, a newer format is
refused with a message, keys this version does not know survive."""

import json
from dataclasses import replace

import pytest

from sae_core.activations import OUTLIER_FACTOR
from sae_core.atlas.info import AtlasInfo, UnknownVersion, info_from_json, info_json
from sae_core.atlas.layout import INFO_FILE, read_info
from sae_core.atomic import CorruptFile, write_json


def test_a_built_atlas_record_round_trips_to_the_same_bytes(tiny_atlas, tmp_path):
    info = read_info(tiny_atlas)
    assert info.trained_here and info.control == "none" and info.source is None
    assert info.outlier_factor == info.train_cfg["outlier_factor"]
    write_json(tmp_path / INFO_FILE, info_json(info))
    assert (tmp_path / INFO_FILE).read_bytes() == (tiny_atlas / INFO_FILE).read_bytes()


def test_optional_groups_are_written_only_when_they_apply():
    bare = info_json(AtlasInfo(model="m", hookpoints=("layers.0",)))
    assert list(bare) == ["model", "corpus", "seq_len", "train_cfg", "hookpoints",
                          "heldout_windows"]
    trained = info_json(AtlasInfo(model="m", lm_tokens=5, parallel=None))
    assert trained["parallel"] is None and trained["lm_tokens"] == 5  # the group, null kept
    control = info_json(AtlasInfo(model="m", control="shuffled", control_seed=3, control_of="m"))
    assert (control["control"], control["control_seed"]) == ("shuffled", 3)
    hub = info_json(AtlasInfo(model="m", source={"repo_id": "a/b"}))
    assert hub["warnings"] == [] and "lm_tokens" not in hub
    assert AtlasInfo(model="m").outlier_factor == OUTLIER_FACTOR  # the build's default


def test_a_newer_format_is_refused_and_unknown_keys_survive():
    raw = {"model": "m", "hookpoints": ["layers.0"], "made_by": "a later tool"}
    info = info_from_json(raw)
    assert info.extra == {"made_by": "a later tool"} and info_json(info)["made_by"]
    with pytest.raises(UnknownVersion, match="format 2"):
        info_from_json(raw | {"version": 2})
    again = info_json(replace(info, version=2))
    assert again["version"] == 2  # a later format says so; version 1 writes no key
    for bad in ([], {"model": "m"}, {"hookpoints": ["layers.0"]}):
        with pytest.raises(CorruptFile):
            info_from_json(bad)


def test_reading_a_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_info(tmp_path)
    (tmp_path / INFO_FILE).write_text(json.dumps({"model": "m", "hookpoints": [], "version": 9}))
    with pytest.raises(UnknownVersion, match="atlas format 9"):
        read_info(tmp_path)
