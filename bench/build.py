"""The whole default atlas against the machine's floor, measured in one run.

Builds the default atlas (all 30 residual SAEs of the embedded model on the default corpus,
default settings) from scratch the way the app does (sae_core/jobs/stages.py): the SAEs, with
the one pass after training that writes the evaluation's reconstruction, the feature index
and the layer evidence, then CE loss; then the presets. Then times the floor on the same
machine: a plain bf16 forward of the full model over exactly the tokens the SAEs were trained
on, plus one dense bf16 encoder matmul (tokens x d_in @ d_in x width) per SAE over those
tokens (timed on LM-batch-sized blocks, times the number of blocks).

    python bench/build.py [--skip-presets]
    python bench/build.py --quick-only    # the quick atlas alone: RESULT quick_s=...

RESULT keys: build_s (SAEs, evaluation, layer map and evidence, feature index), floor_s,
build_vs_floor = build_s / floor_s, full_atlas_s (build_s plus the presets: everything the
app shows; equal to build_s with --skip-presets), and the parts; quick_s, the first round
the app builds when it has no atlas (jobs/stages.quick_job: every third layer, 32,768
tokens, the bare layer map, a small index), timed first, before the full build.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time

import torch
from common import OUT, load_lm

from sae_core.atlas.layout import INDEX_DIR, INDEX_META_FILE, read_info
from sae_core.atomic import read_json
from sae_core.config import BuildConfig, TrainConfig
from sae_core.corpus import load_texts, split_ids, token_windows
from sae_core.jobs.stages import STAGES, BuildJob, quick_job, stages_of


def timed_stages(job: BuildJob, lm) -> dict[str, float]:
    seconds = {}
    for stage in stages_of(job):
        t0 = time.perf_counter()
        if not stage.done(job.folder):
            stage.run(job, lm, None)
        seconds[stage.name] = time.perf_counter() - t0
        print(f"  {stage.name}: {seconds[stage.name]:.1f} s", flush=True)
    return seconds


def forward_seconds(lm, windows_WL: torch.Tensor, per_batch: int) -> float:
    """A plain bf16 forward of the full model over `windows_WL`, LM batch by LM batch."""
    t0 = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for start in range(0, len(windows_WL), per_batch):
            lm.model(windows_WL[start:start + per_batch], use_cache=False)
    return time.perf_counter() - t0


def matmul_seconds(rows: int, d_in: int, width: int, repeats: int = 20) -> float:
    """One dense bf16 (rows x d_in) @ (d_in x width) matmul, median of `repeats`."""
    a, b = torch.randn(rows, d_in).bfloat16(), torch.randn(d_in, width).bfloat16()
    times = []
    for _ in range(repeats + 3):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return sorted(times[3:])[repeats // 2]


def quick_seconds(lm) -> float:
    """The quick atlas built from scratch as the app's first round builds it."""
    job = quick_job(OUT / "build_atlas" / "default", lm.n_layers)
    shutil.rmtree(job.folder, ignore_errors=True)
    print(f"building the quick atlas {job.folder} (layers {job.data.layers})", flush=True)
    quick_s = sum(timed_stages(job, lm).values())
    shutil.rmtree(job.folder, ignore_errors=True)
    return quick_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-presets", action="store_true")
    parser.add_argument("--quick-only", action="store_true", help="time the quick atlas alone")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="  %(name)s: %(message)s")
    data, cfg = BuildConfig(), TrainConfig()
    lm = load_lm()
    quick_s = quick_seconds(lm)
    if args.quick_only:
        print(f"RESULT quick_s={quick_s:.1f}")
        return
    folder = OUT / "build_atlas"
    shutil.rmtree(folder, ignore_errors=True)
    parts = STAGES[:-1] if args.skip_presets else STAGES
    job = BuildJob(folder, data=data, cfg=cfg, parts=tuple(s.name for s in parts))
    print(f"building {folder} ({torch.get_num_threads()} threads)", flush=True)
    seconds = timed_stages(job, lm)
    build_s = sum(v for k, v in seconds.items() if k != "presets")
    full_s = sum(seconds.values())
    info = read_info(folder)
    index = read_json(folder / INDEX_DIR / INDEX_META_FILE)

    windows = token_windows(lm.tokenizer, load_texts(data.corpus), data.seq_len)
    train_w = windows[split_ids(len(windows), data.held_out)[0]]
    per_batch = cfg.lm_batch_tokens // data.seq_len
    trained_w = train_w[: info.lm_tokens // data.seq_len]
    fwd_s = forward_seconds(lm, trained_w, per_batch)
    n_blocks = len(trained_w) // per_batch
    mm_s = matmul_seconds(per_batch * data.seq_len, lm.d_model, cfg.sae_width(lm.d_model))
    floor_s = fwd_s + len(info.hookpoints) * n_blocks * mm_s
    print(f"{info.lm_tokens:,} training tokens, {len(info.hookpoints)} SAEs")
    print(f"training {info.train_seconds:.1f} s; after training (pass, index, evidence, CE) "
          f"{info.total_seconds - info.train_seconds:.1f} s, of which the pass "
          f"{index['pass_seconds']:.1f} s")
    print(f"floor: forward {fwd_s:.1f} s + {len(info.hookpoints)} x {n_blocks} encoder "
          f"matmuls of {1000 * mm_s:.1f} ms = {floor_s:.1f} s")
    print(f"RESULT build_s={build_s:.1f} floor_s={floor_s:.1f} "
          f"build_vs_floor={build_s / floor_s:.3f} full_atlas_s={full_s:.1f} "
          f"train_s={info.train_seconds:.1f} pass_s={index['pass_seconds']:.1f} "
          f"forward_s={fwd_s:.1f} matmul_ms={1000 * mm_s:.2f} quick_s={quick_s:.1f}")


if __name__ == "__main__":
    main()
