"""The build pipeline: train one SAE per layer in one pass over a corpus, evaluate, save
(the layout is in layout.py)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ..config import BuildConfig, RunConfig, TrainConfig
from ..corpus import load_texts, split_ids, token_windows
from ..lm import LM, load_lm
from ..memory import check_memory, training_memory
from ..metrics import RunningFvu
from ..model_controls import apply_control, control_info
from ..precision import resolve_device, use_bf16
from ..progress import Report
from ..sae import Sae
from ..train.checkpoint import gather_layers
from ..train.loop import train_saes
from ..train.ranks import Ranks, from_environment, rank_device
from ..train.trainer import MultiTrainer
from .evaluate import evaluate_atlas
from .info import AtlasInfo
from .layout import CHECKPOINT_DIR, DEFAULT_ATLAS, forget_reads, is_built
from .writing import AtlasBusy, atlas_lock, recover_swap, staging_dir, swap_in, write_atlas

AfterTraining = Callable[[Path, LM, dict[str, Sae], dict[str, float], AtlasInfo,
                          Report | None],
                         dict[str, RunningFvu]]
"""(staging folder, LM, trained SAEs, medians, atlas.json so far, report) -> held-out
reconstruction: what the build reads from its SAEs besides CE (explore/one_pass.py)."""


def _final_saes(trainer: MultiTrainer) -> dict[str, Sae]:
    """The SAEs as saved, each with what a reader needs of its training in its metadata."""
    out = {}
    for h, state in trainer.layers.items():
        sae = state.trainer.final_sae()
        sae.metadata = sae.metadata | {
            "median_norm": state.median_norm, "n_tokens": state.trainer.n_tokens,
            "n_dropped": state.n_dropped, "outlier_factor": trainer.cfg.outlier_factor,
        }
        out[h] = sae
    return out


def _batch_report(report: Report | None, batch_tokens: int):
    """A training progress callback that reports LM tokens done and the mean FVU over layers."""
    def on_batch(done: int, total: int, stats: dict) -> None:
        fvu = [v for v in stats["fvu"].values() if v == v]  # NaN while buffers fill
        if report:
            mean = sum(fvu) / len(fvu) if fvu else None
            shown = f"{mean:.3f}" if fvu else "(filling the shuffle buffer)"
            report(f"training batch {done}/{total}, mean FVU {shown}", done / total,
                   tokens=done * batch_tokens, mean_fvu=mean)
    return on_batch


def build_atlas(
    out: Path = DEFAULT_ATLAS, *, data: BuildConfig | None = None,
    cfg: TrainConfig | None = None, report: Report | None = None, lm: LM | None = None,
    run: RunConfig | None = None, ranks: Ranks | None = None, after: AfterTraining | None = None,
) -> Path:
    """Train one SAE per hookpoint (layer and site) in one pass over the corpus, evaluate,
    save; on `run.device`, on the ranks torchrun started (`run.parallel`) or one process.

    The build happens in a staging folder (writing.py) swapped in when finished, under the
    atlas's write lock (rank 0 holds it); an interrupted build resumes there, and refuses to
    resume from a checkpoint made with other data or settings. Before any training, the
    memory the build needs is checked against what the device has (memory.py).

    `after` (explore/one_pass.after_training, which jobs/stages.py passes) reads the trained
    SAEs once for the held-out reconstruction, the feature index and the layer evidence,
    writing the last two into the staging folder; without it the evaluation reads the
    held-out windows itself and the other products are built later, each with its own pass."""
    data, cfg, run, out = data or BuildConfig(), cfg or TrainConfig(), run or RunConfig(), Path(out)
    device = resolve_device(run.device)
    ranks = ranks or from_environment(run.parallel, device)
    lm = lm or load_lm(data.model, device=rank_device(device))
    real_name, lm = lm.name, apply_control(lm, data.control, cfg.seed)  # before any use
    hookpoints = data.hookpoints(lm.n_layers)
    for h in hookpoints:
        lm.module_for(h)  # a bad layer fails before any work
    check_memory(training_memory(lm, len(ranks.share(hookpoints)), cfg, data.seq_len, ranks),
                 lm.device)
    with ExitStack() as stack:
        busy = None
        if ranks.is_main:
            try:
                stack.enter_context(atlas_lock(out))
            except AtlasBusy as err:
                busy = err
        if not ranks.agree(busy is None):
            raise busy or AtlasBusy(f"another build is writing {out} right now")
        # a crash mid-swap: the finished build goes in, and there is nothing to train
        if ranks.agree(not (ranks.is_main and recover_swap(out, is_built))):
            staging = staging_dir(out)
            _build_in(staging, lm, hookpoints, data, cfg, report, ranks, after,
                      control_info(data.control, cfg.seed, real_name))
            if ranks.is_main:
                swap_in(staging, out)
    forget_reads(out)
    return out


def _build_in(staging: Path, lm: LM, hookpoints: list[str], data: BuildConfig,
              cfg: TrainConfig, report: Report | None, ranks: Ranks,
              after: AfterTraining | None, control: dict) -> None:
    windows = token_windows(lm.tokenizer, load_texts(data.corpus), data.seq_len)
    train_ids, test_ids = split_ids(len(windows), data.held_out)
    train_w, test_w = windows[train_ids], windows[test_ids]
    if ranks.is_main:
        staging.mkdir(parents=True, exist_ok=True)
    ranks.barrier()
    batch_tokens = (cfg.lm_batch_tokens // data.seq_len) * data.seq_len
    t0 = time.perf_counter()
    trainer = train_saes(
        lm, train_w, hookpoints, cfg, checkpoint_dir=staging / CHECKPOINT_DIR,
        progress=_batch_report(report, batch_tokens), ranks=ranks,
        data={"corpus": data.corpus, "seq_len": data.seq_len, "held_out": data.held_out,
              **control})  # a control's checkpoint never resumes a real build, nor back
    gather_layers(trainer)
    if not ranks.is_main:
        return  # rank 0 evaluates and writes
    train_s = time.perf_counter() - t0
    n_tokens = trainer.step_no * batch_tokens
    info = AtlasInfo(
        model=lm.name, corpus=data.corpus, seq_len=data.seq_len, train_cfg=asdict(cfg),
        train_windows=len(train_w), heldout_windows=data.held_out,
        heldout_ids=tuple(test_ids.tolist()), lm_tokens=n_tokens, train_seconds=train_s,
        train_tok_s=n_tokens / train_s, torch_threads=torch.get_num_threads(),
        bf16_used=use_bf16(cfg.bf16, lm.device), device=lm.device.type, ranks=ranks.world,
        parallel=ranks.describe().get("parallel"), **control)

    def measure(info: AtlasInfo) -> tuple[dict[str, dict], AtlasInfo]:
        saes = trainer.saes()
        medians = {h: s.median_norm for h, s in trainer.layers.items()}
        recon = after(staging, lm, saes, medians, info, report) if after else None
        metrics = evaluate_atlas(lm, saes, medians, test_w, outlier_factor=cfg.outlier_factor,
                                 ce_windows=data.ce_windows, report=report, recon=recon)
        for h, state in trainer.layers.items():
            metrics[h] |= {
                "dead_frac_train": state.trainer.dead_fraction(),
                "train_tokens": state.trainer.n_tokens, "dropped_tokens": state.n_dropped,
            }
        return metrics, replace(info, total_seconds=time.perf_counter() - t0)

    write_atlas(staging, _final_saes(trainer), info, measure)
    shutil.rmtree(staging / CHECKPOINT_DIR)  # finished: the resumable state is not needed
