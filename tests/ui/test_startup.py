"""Which atlas the app serves at start and what it builds: with no atlas, a quick atlas
first and the full one after it; with the quick one ready, it is served while the full one
builds; with a whole atlas, nothing is built."""

from types import SimpleNamespace

from sae_core.jobs.stages import QUICK_NAME
from ui.serving import startup


def _started(monkeypatch, ready: dict[str, tuple[str, ...]], built: set[str]):
    calls = []
    monkeypatch.setattr(startup.builds, "start", lambda job, then=None: calls.append((job, then)))
    monkeypatch.setattr(startup.session, "model", lambda name: SimpleNamespace(n_layers=30))
    monkeypatch.setattr(startup, "ready_parts", lambda folder: ready.get(folder.name, ()))
    monkeypatch.setattr(startup, "is_built", lambda folder: folder.name in built)
    return calls


def test_no_atlas_builds_a_quick_one_then_the_full_one(monkeypatch, tmp_path):
    calls = _started(monkeypatch, {}, set())
    start = startup.choose_atlas({}, default=tmp_path / "default")
    (first, then), = calls
    assert first.quick and first.folder == tmp_path / QUICK_NAME
    assert first.data.layers == tuple(range(0, 30, 3))
    assert then.folder == tmp_path / "default" and not then.quick
    assert start.atlas == tmp_path / "default"  # nothing to serve yet: the picker waits
    assert "a quick atlas, then" in start.notes[0]


def test_a_ready_quick_atlas_is_served_while_the_full_one_builds(monkeypatch, tmp_path):
    calls = _started(monkeypatch, {QUICK_NAME: ("SAEs", "layer map", "feature index")},
                     {QUICK_NAME})
    start = startup.choose_atlas({}, default=tmp_path / "default")
    (job, then), = calls
    assert job.folder == tmp_path / "default" and then is None
    assert start.atlas == tmp_path / QUICK_NAME


def test_a_whole_atlas_builds_nothing_and_a_partial_one_only_its_parts(monkeypatch, tmp_path):
    whole = ("SAEs", "layer map", "feature index", "presets")
    calls = _started(monkeypatch, {"default": whole}, {"default"})
    assert startup.choose_atlas({}, default=tmp_path / "default").atlas == tmp_path / "default"
    assert calls == []
    calls = _started(monkeypatch, {"default": whole[:2]}, {"default"})
    startup.choose_atlas({}, default=tmp_path / "default")
    (job, then), = calls
    assert job.folder == tmp_path / "default" and then is None and not job.quick
