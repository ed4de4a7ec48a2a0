"""The background build worker: same atlas as a direct build, cancel and resume, one build
at a time, failures reported."""

import json
import threading

import pytest
import torch

from sae_core.atlas.build import build_atlas
from sae_core.atlas.layout import CHECKPOINT_DIR, is_built
from sae_core.atlas.writing import staging_dir
from sae_core.config import BuildConfig, TrainConfig
from sae_core.jobs import worker as worker_mod
from sae_core.jobs.stages import BuildJob, ready_parts
from sae_core.jobs.worker import BuildWorker, WorkerBusy
from sae_core.sae import Sae
from tests.conftest import WORDS, tiny_lm

CFG = TrainConfig(expansion=2, k=4, batch_tokens=64, lm_batch_tokens=64, bf16=False,
                  checkpoint_every=1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    lines = [" ".join(WORDS[(i * 5 + j) % len(WORDS)] for j in range(40)) for i in range(60)]
    path.write_text("\n".join(json.dumps({"text": t}) for t in lines))
    return str(path)


def data(corpus) -> BuildConfig:
    return BuildConfig(corpus=corpus, seq_len=16, held_out=8)


def job(folder, corpus, parts=("SAEs",)) -> BuildJob:
    return BuildJob(folder, data(corpus), CFG, parts)


def same_saes(a, b) -> bool:
    hooks = [p.name for p in sorted(a.glob("layers.*"))]
    return hooks == [p.name for p in sorted(b.glob("layers.*"))] and all(
        torch.equal(x, y) for h in hooks
        for x, y in zip(Sae.load(a / h).state_dict().values(),
                        Sae.load(b / h).state_dict().values(), strict=True))


def test_worker_builds_what_build_atlas_builds(tmp_path, corpus):
    direct = build_atlas(tmp_path / "direct", data=data(corpus), cfg=CFG, lm=tiny_lm())
    worker = BuildWorker(lambda name: tiny_lm())
    worker.start(job(tmp_path / "bg", corpus, parts=("SAEs", "layer map")))
    status = worker.wait(120)
    assert status.state == "done", status.error
    assert status.ready == ("SAEs", "layer map") == ready_parts(tmp_path / "bg")
    assert status.mean_fvu is not None and 0 < status.mean_fvu < 2
    assert same_saes(direct, tmp_path / "bg")


def test_cancel_then_start_again_resumes_to_the_same_saes(tmp_path, corpus, monkeypatch):
    whole = BuildWorker(lambda name: tiny_lm())
    whole.start(job(tmp_path / "whole", corpus))
    assert whole.wait(120).state == "done"

    worker = BuildWorker(lambda name: tiny_lm())
    advanced = worker_mod.advanced

    def cancel_half_way(status, clock, message, fraction, stats):
        if fraction >= 0.5:
            worker.cancel()  # the next report raises Cancelled
        return advanced(status, clock, message, fraction, stats)

    monkeypatch.setattr(worker_mod, "advanced", cancel_half_way)
    worker.start(job(tmp_path / "resumed", corpus))
    status = worker.wait(120)
    assert status.state == "cancelled" and 0.5 <= status.fraction < 1
    assert not is_built(tmp_path / "resumed")
    assert (staging_dir(tmp_path / "resumed") / CHECKPOINT_DIR).exists()
    monkeypatch.setattr(worker_mod, "advanced", advanced)
    worker.start(job(tmp_path / "resumed", corpus))
    assert worker.wait(120).state == "done"
    assert same_saes(tmp_path / "whole", tmp_path / "resumed")


def test_one_build_at_a_time(tmp_path, corpus):
    release = threading.Event()

    def slow_lm(name):
        release.wait(60)
        return tiny_lm()

    worker = BuildWorker(slow_lm)
    first = worker.start(job(tmp_path / "a", corpus))
    assert first.active
    assert worker.start(job(tmp_path / "a", corpus)).folder == first.folder  # joins it
    with pytest.raises(WorkerBusy, match="one build at a time"):
        worker.start(job(tmp_path / "b", corpus))
    release.set()
    assert worker.wait(120).state == "done"


def test_a_failure_is_reported_and_the_worker_takes_the_next_job(tmp_path, corpus):
    def no_model(name):
        raise ValueError(f"could not load model id or path {name!r}")

    worker = BuildWorker(no_model)
    worker.start(job(tmp_path / "x", corpus))
    status = worker.wait(60)
    assert status.state == "failed" and "could not load" in status.error
    worker._lm_for = lambda name: tiny_lm()
    worker.start(job(tmp_path / "x", corpus))
    assert worker.wait(120).state == "done"


def test_job_parts_are_checked(tmp_path):
    with pytest.raises(ValueError, match="parts"):
        BuildJob(tmp_path, parts=("layer map",))
    with pytest.raises(ValueError, match="parts"):
        BuildJob(tmp_path, parts=("SAEs", "nonsense"))


def test_complete_atlas_builds_only_what_is_missing(tmp_path, tiny_atlas):
    import shutil

    from sae_core.jobs.stages import STAGES, complete_atlas
    from ui.serving import session

    folder = shutil.copytree(tiny_atlas, tmp_path / "copy")
    # other tests may have indexed the shared tiny atlas: start from SAEs and a layer map
    shutil.rmtree(folder / "features", ignore_errors=True)
    (folder / "presets.json").unlink(missing_ok=True)
    layer_map_stamp = (folder / "layer_map.json").stat().st_mtime_ns
    assert ready_parts(folder) == ("SAEs", "layer map")
    assert complete_atlas(folder, session.model("tiny-llama")) == ["feature index", "presets"]
    assert ready_parts(folder) == tuple(s.name for s in STAGES)
    assert (folder / "layer_map.json").stat().st_mtime_ns == layer_map_stamp  # kept
    assert complete_atlas(folder, session.model("tiny-llama")) == []
