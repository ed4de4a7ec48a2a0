"""The app's session: each model and atlas is loaded once and shared, in bounded caches
(least recently used out) that never drop registered models."""

import dataclasses
import shutil
import threading
import time
from collections import OrderedDict
from pathlib import Path

import pytest

from tests.conftest import tiny_lm
from ui.serving import public, session


def test_atlases_and_models_load_once(tiny_atlas):
    loaded = session.open_atlas(tiny_atlas)
    assert session.open_atlas(str(tiny_atlas)) is loaded  # str or Path, the same atlas
    assert session.model(loaded.info.model) is loaded.lm
    assert loaded.lm.name == "tiny-llama" and loaded.folder == tiny_atlas


@pytest.fixture
def fresh(monkeypatch):
    """Empty caches (restored after), registered models kept, and a counting model loader."""
    monkeypatch.setattr(session, "_models", OrderedDict())
    monkeypatch.setattr(session, "_atlases", OrderedDict())
    monkeypatch.setattr(session, "_pinned", dict(session._pinned))
    monkeypatch.setattr(session, "ATLAS_ROOT", Path("/"))  # cache tests: every folder listed
    loads = []

    def load_named(name, token=None, device="cpu"):
        loads.append(name)
        time.sleep(0.05)  # slow enough for concurrent callers to overlap
        return dataclasses.replace(tiny_lm(n_layers=1, d_model=8), name=name)

    monkeypatch.setattr(session, "load_named", load_named)
    return loads


def _policy(monkeypatch, public_mode: bool):
    monkeypatch.setattr(public, "_current", public.Policy.for_mode(public_mode))


def test_models_leave_least_recently_used_first(fresh, monkeypatch):
    _policy(monkeypatch, False)  # 4 models
    first = {n: session.model(n) for n in "abcd"}
    assert session.model("a") is first["a"]  # a is now the most recently used
    session.model("e")  # b, the least recently used, leaves
    assert list(session._models) == ["c", "d", "a", "e"] and fresh == [*"abcde"]
    assert session.model("c") is first["c"] and session.model("b") is not first["b"]
    assert fresh == [*"abcdeb"] and list(session._models) == ["a", "e", "c", "b"]


def test_public_mode_keeps_two_models_and_registered_ones_survive(fresh, monkeypatch,
                                                                  tiny_atlas):
    _policy(monkeypatch, True)
    registered = session.model("tiny-llama")  # registered by the tiny_atlas fixture
    names = public.policy().allowed_models[:3]
    for name in names:
        session.model(name)
    assert list(session._models) == list(names[1:])
    assert session.model("tiny-llama") is registered and "tiny-llama" not in fresh
    assert session.open_atlas(tiny_atlas).lm is registered


def test_concurrent_callers_load_a_model_once(fresh, monkeypatch):
    _policy(monkeypatch, False)
    got, threads = [], [threading.Thread(target=lambda: got.append(session.model("x")))
                        for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fresh == ["x"] and len(got) == 8 and all(m is got[0] for m in got)


def test_evicted_and_forgotten_atlases_reopen(fresh, monkeypatch, tiny_atlas, tmp_path):
    _policy(monkeypatch, True)  # 4 atlases
    folders = [tmp_path / f"copy{i}" for i in range(5)]
    for folder in folders:
        shutil.copytree(tiny_atlas, folder)
    opened = [session.open_atlas(f) for f in folders]
    assert list(session._atlases) == [f.resolve() for f in folders[1:]]  # copy0 left
    again = session.open_atlas(folders[0])
    assert again is not opened[0] and again.folder == folders[0]
    assert again.saes.keys() == opened[0].saes.keys()
    assert session.open_atlas(folders[4]) is opened[4]
    session.forget(folders[4])
    assert session.open_atlas(folders[4]) is not opened[4]


def test_an_evicted_model_takes_its_atlases_along(fresh, monkeypatch, tiny_atlas, tmp_path):
    """An atlas never keeps an evicted model alive beside a reloaded copy."""
    _policy(monkeypatch, False)
    info = (tiny_atlas / "atlas.json").read_text()
    folder = tmp_path / "other-model"
    shutil.copytree(tiny_atlas, folder)
    (folder / "atlas.json").write_text(info.replace('"tiny-llama"', '"m0"'))
    monkeypatch.setattr(session, "load_named", lambda name, token=None, device="cpu":
                        dataclasses.replace(session._pinned["tiny-llama"], name=name))
    loaded = session.open_atlas(folder)
    assert loaded.lm.name == "m0" and folder.resolve() in session._atlases
    for name in ("m1", "m2", "m3", "m4"):  # m0 leaves, and its atlas with it
        session.model(name)
    assert "m0" not in session._models and folder.resolve() not in session._atlases


def test_public_mode_opens_only_listed_folders(tiny_atlas, monkeypatch):
    """A stranger's request cannot make the server open an atlas at any other path."""
    old = public.set_policy(public.Policy.for_mode(True))
    try:
        session.forget(tiny_atlas)
        with pytest.raises(ValueError, match="unknown SAE set"):
            session.open_atlas(tiny_atlas)  # a tmp folder, outside checkpoints/atlas
        session.serve_folder(tiny_atlas)
        assert session.open_atlas(tiny_atlas).folder == tiny_atlas
    finally:
        public.set_policy(old)
        session._served.discard(tiny_atlas.resolve())
