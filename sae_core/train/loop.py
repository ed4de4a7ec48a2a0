"""The training loop: one LM forward per batch captures every hookpoint, each layer's SAE
steps on its activations, checkpoints along the way; on the LM's device, on one process or
several (ranks.py)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from ..config import TrainConfig
from ..hooks import run_captured
from ..lm import LM
from .checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from .ranks import SOLO, Ranks
from .trainer import MultiTrainer, steps_per_lm_batch

Progress = Callable[[int, int, dict], None]
"""progress(batches done, batches in all, {"step", "fvu": per hookpoint})."""


def train_saes(
    lm: LM, windows_WL: Tensor, hookpoints: list[str], cfg: TrainConfig, *,
    checkpoint_dir: Path | None = None, progress: Progress | None = None,
    data: dict | None = None, ranks: Ranks = SOLO,
) -> MultiTrainer:
    """Train one SAE per hookpoint on `windows` (n_windows, seq_len) token ids, one pass
    (or `cfg.max_tokens` of them, drawn at random).

    Resumes from `checkpoint_dir` when it holds a checkpoint of the same config, model,
    hookpoints and windows (and `data`: the caller's description of where they came from);
    refuses with the differences otherwise (checkpoint.ResumeRefused). Under `ranks`, this
    rank trains its share (data parallel: its windows of every batch; layers: its hookpoints)
    and rank 0 writes the checkpoints; `progress` is called on rank 0 only.
    """
    for h in hookpoints:
        lm.module_for(h)  # fail fast on a bad hookpoint
    seq_len = windows_WL.shape[1]
    per_batch = max(cfg.lm_batch_tokens // seq_len, 1)
    order = torch.randperm(len(windows_WL), generator=torch.Generator().manual_seed(cfg.seed))
    n_batches = len(windows_WL) // per_batch
    if cfg.max_tokens is not None:
        n_batches = min(n_batches, math.ceil(cfg.max_tokens / (per_batch * seq_len)))
    if n_batches == 0:
        raise ValueError(
            f"need at least {per_batch} windows of {seq_len} tokens, got {len(windows_WL)}"
        )
    ranks.check_training(cfg, hookpoints, per_batch)
    trainer = MultiTrainer(cfg, hookpoints, lm.name, n_batches * steps_per_lm_batch(cfg),
                           ranks=ranks, device=lm.device)
    data = training_data(lm, windows_WL, hookpoints) | (data or {}) | ranks.describe()
    start = 0
    if checkpoint_dir is not None and has_checkpoint(checkpoint_dir):
        start = load_checkpoint(trainer, checkpoint_dir, data)
    for b in range(start, n_batches):
        batch = windows_WL[order[b * per_batch:(b + 1) * per_batch]]
        acts = run_captured(lm, ranks.windows(batch), trainer.mine, bf16=cfg.bf16)
        if trainer.needs_init():  # data parallel: from the whole batch, as one process would
            trainer.init_layers(run_captured(lm, batch, trainer.mine, bf16=cfg.bf16)
                                if ranks.data_parallel else acts)
        stats = trainer.step(acts)
        done = b + 1
        if checkpoint_dir is not None and cfg.checkpoint_every and (
            done % cfg.checkpoint_every == 0 or done == n_batches
        ):
            save_checkpoint(trainer, checkpoint_dir, done, data)
        if progress is not None and ranks.is_main:
            progress(done, n_batches, stats)
    trainer.drain()
    return trainer


def training_data(lm: LM, windows_WL: Tensor, hookpoints: list[str]) -> dict:
    """What a checkpoint must have been trained on to be resumed: the model, the hookpoints
    and the exact token windows (a digest)."""
    ids = windows_WL.to(torch.int64).contiguous().numpy().tobytes()
    return {"model": lm.name, "hookpoints": ",".join(hookpoints),
            "windows": f"{tuple(windows_WL.shape)} sha256 {hashlib.sha256(ids).hexdigest()}"}
