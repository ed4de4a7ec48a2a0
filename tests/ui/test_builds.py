"""The progress panel and the train form, against a real worker on the tiny model."""

import json
from pathlib import Path

import gradio as gr
import pytest

from sae_core.atlas.layout import read_info
from sae_core.config import BuildConfig, TrainConfig
from sae_core.jobs.stages import BuildJob
from sae_core.jobs.status import BuildStatus
from sae_core.jobs.worker import BuildWorker
from tests.conftest import WORDS, tiny_lm
from ui.saes import train_panel
from ui.serving import builds, public


@pytest.fixture
def worker(monkeypatch):
    fresh = BuildWorker(lambda name: tiny_lm())
    monkeypatch.setattr(builds, "WORKER", fresh)
    return fresh


def tiny_job(tmp_path: Path, parts=("SAEs", "layer map")) -> BuildJob:
    corpus = tmp_path / "corpus.jsonl"
    lines = [" ".join(WORDS[(i * 3 + j) % len(WORDS)] for j in range(40)) for i in range(60)]
    corpus.write_text("\n".join(json.dumps({"text": t}) for t in lines))
    cfg = TrainConfig(expansion=2, k=4, batch_tokens=64, lm_batch_tokens=64, bf16=False)
    return BuildJob(tmp_path / "tiny", BuildConfig(corpus=str(corpus), seq_len=16, held_out=8),
                    cfg, parts)


def test_status_text_says_stage_progress_and_numbers():
    running = BuildStatus("running", Path("x/default"), "SAEs", "training batch 3/75", 0.04,
                          tok_s=1234.0, eta_s=600.0, mean_fvu=0.2512, ready=())
    text = builds.status_text(running)
    for part in ("`default`", "SAEs", "4% of this part", "about 10 min left", "1,234 tokens/s",
                 "0.251"):
        assert part in text
    assert builds.status_text(BuildStatus()) == ""
    note = builds.picker_info(running)
    assert "Being built: default (SAEs, about 10 min left)" in note
    assert builds.picker_info(BuildStatus("running", Path("x/default"), "layer map",
                                          ready=("SAEs",))) == ""  # in the list by then
    assert builds.picker_info(BuildStatus()) == ""
    failed = BuildStatus("failed", Path("x/a"), error="ValueError: bad corpus")
    assert "failed" in builds.status_text(failed) and "bad corpus" in builds.status_text(failed)


def test_poll_hands_the_new_atlas_to_the_picker_and_signals_each_part(tmp_path, worker):
    job = tiny_job(tmp_path)
    worker.start(job)
    assert worker.wait(120).state == "done"
    _, text, picker, key, timer = builds.poll(None, "")
    assert isinstance(picker, gr.Dropdown) and picker.value == str(job.folder.resolve())
    assert key == f"{job.folder.resolve()}|SAEs,layer map|done" and "is ready" in text
    assert timer.active is False  # nothing runs: no more polling
    assert picker.info == ""  # nothing is being built any more
    # The same state again changes nothing (tabs redraw only when a part appears).
    _, _, picker, same, _ = builds.poll(str(job.folder), key)
    assert picker == gr.skip() and same == gr.skip()


def test_train_job_checks_every_field(tmp_path):
    job = train_panel.train_job("my set", "embedded", "0, 5,12", 4, 16, 50_000)
    assert job.folder.name == "my-set" and job.data.layers == (0, 5, 12)
    assert (job.cfg.expansion, job.cfg.k, job.cfg.max_tokens) == (4, 16, 50_000)
    assert train_panel.train_job("a", "", "all", 8, 32, 307_200).data.layers is None
    assert job.data.site == ("resid",)  # the default site
    both = train_panel.train_job("a", "", "all", 8, 32, 307_200, ["attn", "resid"])
    assert both.data.site == ("resid", "attn")  # the library's order
    bad = [("", "embedded", "all", 8, 32, 1e5, "name"),
           ("a", "embedded", "1;2", 8, 32, 1e5, "layers"),
           ("a", "embedded", "all", float("nan"), 32, 1e5, "width"),
           ("a", "embedded", "all", 8, 2.5, 1e5, "k"),
           ("a", "embedded", "all", 8, 32, -1, "token budget"),
           ("a", "embedded", "all", 8, 32, 1e12, "token budget"),
           ("a", "embedded", "all", 8, 32, 1e5, [], "sites"),
           ("a", "embedded", "all", 8, 32, 1e5, ["resid", "mlps"], "sites"),
           ("a", "embedded", "all", 8, 32, 1e5, [{"x": 1}], "sites")]
    for *args, field in bad:
        with pytest.raises(ValueError, match=field):
            train_panel.train_job(*args)


def test_the_train_form_trains_a_new_set_that_joins_the_picker(tmp_path, worker, monkeypatch,
                                                               tiny_atlas):
    """The SAEs tab's Train button: the app's worker trains the set (`tiny_atlas` registers
    the tiny model), and the next poll hands it to the picker."""
    monkeypatch.chdir(tmp_path)  # checkpoints/atlas/<name> lands here
    text, timer = train_panel.start_training("mine", "tiny-llama", "0,2", 2, 4, 4096, ["mlp"])
    assert "Training `mine`" in text and timer.active
    status = worker.wait(300)
    assert status.state == "done" and status.ready == ("SAEs",), status.error
    info = read_info(tmp_path / "checkpoints/atlas/mine")
    assert list(info.hookpoints) == ["layers.0.mlp", "layers.2.mlp"] and info.lm_tokens == 4096
    assert info.train_cfg["expansion"] == 2 and info.train_cfg["k"] == 4
    _, _, picker, _, _ = builds.poll("checkpoints/atlas/other", "")
    values = [c[0] if isinstance(c, tuple) else c for c in picker.choices]
    assert str(status.folder) in values  # joins the picker
    assert picker.value == "checkpoints/atlas/other"  # a visitor's own choice stays
    with pytest.raises(gr.Error, match="exists already"):
        train_panel.start_training("mine", "tiny-llama", "0", 2, 4, 4096)


def test_build_buttons_never_start_a_new_atlas_at_a_typed_path(tmp_path, worker, tiny_atlas):
    """The layer map / index / presets buttons build derived parts of a finished set only; in
    public mode only of a listed one."""
    for folder in (None, "", str(tmp_path / "not-an-atlas")):
        with pytest.raises(gr.Error, match="finished SAE set"):
            builds.build_parts(folder, "layer map")
    assert worker.status().state == "idle" and not (tmp_path / "not-an-atlas").exists()
    old = public.set_policy(public.Policy.for_mode(True))
    try:
        with pytest.raises(gr.Error, match="unknown SAE set"):
            builds.build_parts(str(tiny_atlas), "layer map")  # a tmp folder: not listed
    finally:
        public.set_policy(old)
    assert worker.status().state == "idle"


def test_a_quick_atlas_is_served_first_and_the_full_one_takes_over(tmp_path, worker):
    """The first build's two rounds: the quick atlas (every third layer, the bare layer map,
    a small index, no presets) and then the full atlas, in one start; the picker takes the
    quick one when it is ready and the full one when it is whole."""
    from dataclasses import replace

    from sae_core.explore.layermap import read_layer_map
    from sae_core.explore.probing import read_probing
    from sae_core.jobs.stages import QUICK_NAME, quick_job, ready_parts

    full = replace(tiny_job(tmp_path, parts=("SAEs", "layer map", "feature index")),
                   folder=tmp_path / "default")  # the quick atlas stands in for the default
    assert quick_job(full.folder, n_layers=30).data.layers == (0, 3, 6, 9, 12, 15, 18, 21, 24, 27)
    quick = quick_job(full.folder, n_layers=3)  # the tiny model: layer 0 alone
    assert quick.folder == tmp_path / QUICK_NAME and quick.data.layers == (0,)
    quick = replace(quick, data=replace(full.data, layers=quick.data.layers, ce_windows=2),
                    cfg=replace(full.cfg, max_tokens=quick.cfg.max_tokens))
    worker.start(quick, then=full)
    status = worker.wait(300)
    assert status.state == "done" and status.folder == full.folder.resolve(), status.error
    assert ready_parts(quick.folder) == ("SAEs", "layer map", "feature index")
    info = read_info(quick.folder)
    assert list(info.hookpoints) == ["layers.0"]
    assert read_layer_map(quick.folder).intervals == {}  # the bare map
    assert read_probing(quick.folder) is None  # no probing in the first round
    assert read_layer_map(full.folder).hookpoints == [f"layers.{i}" for i in range(3)]
    # the full atlas, whole, takes over from the quick one a visitor is looking at
    _, text, picker, _, _ = builds.poll(str(quick.folder), "")
    assert picker.value == str(full.folder.resolve()) and "is ready" in text
    # while the full atlas builds, the panel says the quick one is served
    running = BuildStatus("running", full.folder, "SAEs", "training", 0.5)
    assert "Serving the quick atlas" in builds.status_text(running)
    assert "First a quick atlas" in builds.status_text(replace(running, folder=quick.folder))
    other = replace(running, folder=tmp_path / "mine")  # a set a visitor trains: no rounds
    assert "quick" not in builds.status_text(other)
