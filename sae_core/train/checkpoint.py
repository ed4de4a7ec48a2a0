"""Resumable training state of a `MultiTrainer`: weights, Adam moments, counters and
shuffle buffers as tensors, the rest as JSON in the same safetensors file's header, written
atomically (one file: a crash leaves the previous checkpoint or the new one). A resumed run
is bit-identical to an uninterrupted one (tests/train/test_checkpoint.py). Under several
ranks, rank 0 gathers their state (ranks.py) and writes the one file; each rank resumes its
own part of it.

A checkpoint records what it was trained on (`data`: model, corpus, windows, layers); resume
refuses, with the differences, when any of it changed."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..atomic import load_tensors, save_tensors, tensors_metadata
from ..sae import Sae
from .ranks import recv_tensors, send_tensors

if TYPE_CHECKING:  # the trainer imports this module
    from .trainer import MultiTrainer

STATE_FILE = "state.safetensors"
ADAM_KEYS = ("exp_avg", "exp_avg_sq", "step")


class ResumeRefused(ValueError):
    """A checkpoint made from other data or settings than the build asking to resume."""


def has_checkpoint(folder: Path) -> bool:
    return (folder / STATE_FILE).exists()


def _buffer_key(rank: int) -> str:
    return "buffer" if rank == 0 else f"buffer.{rank}"


def _local_state(trainer: MultiTrainer, *, training: bool) -> tuple[dict, dict]:
    """(CPU tensors, per-layer counters) of this rank's layers; with `training`, Adam moments
    and shuffle buffers too. A data-parallel rank other than 0 gives its buffers only (its
    SAEs and moments are rank 0's)."""
    tensors, layers, rank = {}, {}, trainer.ranks.rank
    buffers_only = trainer.ranks.data_parallel and rank != 0
    for h, s in trainer.layers.items():
        if training and s.buffer is not None:
            tensors |= {f"{h}/{_buffer_key(rank)}/{k}": v.cpu()
                        for k, v in s.buffer.state().items()}
        if buffers_only:
            continue
        for name, p in s.sae.named_parameters():
            tensors[f"{h}/{name}"] = p.detach().cpu()
            opt_state = s.trainer.opt.state.get(p, {}) if training else {}
            for key in ADAM_KEYS:
                if key in opt_state:
                    tensors[f"{h}/{name}/{key}"] = opt_state[key].cpu()
        tensors[f"{h}/since_fired"] = s.trainer.since_fired.cpu()
        tensors |= {f"{h}/trainer/{k}": v.cpu() for k, v in s.trainer.extra_state().items()}
        layers[h] = {"median_norm": s.median_norm, "n_tokens": s.trainer.n_tokens,
                     "step_no": s.trainer.step_no, "n_dropped": s.n_dropped,
                     "d_in": s.sae.cfg.d_in}
    return tensors, layers


def collect_state(trainer: MultiTrainer, *, training: bool = True) -> tuple[dict, dict] | None:
    """Every rank's state, on rank 0: (tensors, per-layer counters); None on the others
    (they send theirs)."""
    tensors, layers = _local_state(trainer, training=training)
    ranks = trainer.ranks
    if ranks.world == 1:
        return tensors, layers
    if not ranks.is_main:
        send_tensors(tensors, layers, dst=0)
    else:
        for src in range(1, ranks.world):
            theirs, their_layers = recv_tensors(src)
            tensors, layers = tensors | theirs, layers | their_layers
    # no rank leaves (or exits) while a send to or from it may still be in flight
    ranks.barrier()
    return (tensors, layers) if ranks.is_main else None


def save_checkpoint(trainer: MultiTrainer, folder: Path, batches_done: int,
                    data: dict | None = None) -> None:
    """Everything needed to resume exactly after `batches_done` LM batches; every rank
    calls it, rank 0 writes."""
    state = collect_state(trainer)
    if state is None:
        return
    tensors, layers = state
    meta = {"batches_done": batches_done, "step_no": trainer.step_no,
            "train_cfg": asdict(trainer.cfg), "layers": layers, "data": data or {}}
    save_tensors(folder / STATE_FILE, tensors, metadata={"meta": json.dumps(meta)})


def restore_layer(trainer: MultiTrainer, h: str, info: dict, tensors: dict[str, Tensor]) -> None:
    """Put layer `h` of a collected or saved state into `trainer` (with its Adam moments and
    this rank's shuffle buffer where the state has them)."""
    sae = Sae(trainer.sae_config(h, info["d_in"]), device=trainer.device)
    state = trainer.layer_state(sae, info["median_norm"], seed=0)  # rng state restored below
    sae = state.sae
    with torch.no_grad():
        for name, p in sae.named_parameters():
            p.copy_(tensors[f"{h}/{name}"])
            if f"{h}/{name}/step" in tensors:
                state.trainer.opt.state[p] = {
                    key: tensors[f"{h}/{name}/{key}"].to(p.device, copy=True)
                    for key in ADAM_KEYS}
    state.trainer.since_fired = tensors[f"{h}/since_fired"].to(trainer.device, copy=True)
    prefix = f"{h}/trainer/"
    state.trainer.load_extra_state({k.removeprefix(prefix): v for k, v in tensors.items()
                                    if k.startswith(prefix)})
    state.trainer.n_tokens, state.trainer.step_no = info["n_tokens"], info["step_no"]
    state.n_dropped = info["n_dropped"]
    key = f"{h}/{_buffer_key(trainer.ranks.rank)}"
    if state.buffer is not None and f"{key}/data" in tensors:
        state.buffer.load_state({k: tensors[f"{key}/{k}"] for k in ("data", "rng")})
    trainer.layers[h] = state


def gather_layers(trainer: MultiTrainer) -> None:
    """Layer split: rank 0 receives the other ranks' finished SAEs and counters (no
    optimizer state) so it can write the whole atlas. Every rank calls it."""
    if trainer.ranks.world == 1 or trainer.ranks.data_parallel:
        return
    state = collect_state(trainer, training=False)
    if state is not None:
        tensors, layers = state
        for h in sorted(layers.keys() - trainer.layers.keys(), key=trainer.hookpoints.index):
            restore_layer(trainer, h, layers[h], tensors)
        trainer.layers = {h: trainer.layers[h] for h in trainer.hookpoints}


def differences(saved: dict, now: dict) -> list[str]:
    """What differs between two flat settings dicts, in words."""
    return [f"{key} (checkpoint: {str(saved.get(key))[:80]}, now: {str(now.get(key))[:80]})"
            for key in sorted(saved.keys() | now.keys()) if saved.get(key) != now.get(key)]


def load_checkpoint(trainer: MultiTrainer, folder: Path, data: dict | None = None) -> int:
    """Restore a checkpoint into `trainer`; returns the number of LM batches already done.
    ResumeRefused when it was made with another training config or other `data`."""
    path = folder / STATE_FILE
    meta = json.loads(tensors_metadata(path)["meta"])
    # Through JSON as saved: a tuple field (matryoshka_prefixes) comes back as a list.
    changed = differences(meta["train_cfg"], json.loads(json.dumps(asdict(trainer.cfg))))
    changed += differences(meta.get("data", {}), data or {})
    if changed:
        raise ResumeRefused(f"cannot resume the build in {folder.parent}: its checkpoint was "
                            f"made with other settings: {'; '.join(changed)}. Delete "
                            f"{folder} to start again, or build to another folder.")
    tensors = load_tensors(path)
    for h, info in meta["layers"].items():
        if h in trainer.mine:
            restore_layer(trainer, h, info, tensors)
    trainer.step_no = meta["step_no"]
    return meta["batches_done"]
