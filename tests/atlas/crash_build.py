"""A whole build of the tiny atlas (SAEs, layer map, feature index), run as a subprocess by
test_crashes.py: `python -m tests.atlas.crash_build FOLDER CORPUS`. Each progress report is
printed as `stage|message`, so the test can kill the build inside a chosen stage."""

import sys
from pathlib import Path

from sae_core.config import BuildConfig, TrainConfig
from sae_core.jobs.stages import BuildJob, stages_of
from tests.conftest import tiny_lm

CFG = TrainConfig(expansion=2, k=4, batch_tokens=64, lm_batch_tokens=64, bf16=False,
                  checkpoint_every=1)
PARTS = ("SAEs", "layer map", "feature index")


def build(folder: Path, corpus: str) -> None:
    job = BuildJob(folder, BuildConfig(corpus=corpus, seq_len=16, held_out=8), CFG, PARTS)
    lm = tiny_lm()
    for stage in stages_of(job):
        if not stage.done(folder):
            stage.run(job, lm, lambda message, *_, name=stage.name, **__:
                      print(f"{name}|{message}", flush=True))
    print("done", flush=True)


if __name__ == "__main__":
    build(Path(sys.argv[1]), sys.argv[2])
