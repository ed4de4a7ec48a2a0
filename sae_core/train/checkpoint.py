"""Resumable training state of a `MultiTrainer`: weights, Adam moments, counters and
shuffle buffers as tensors, the rest as JSON in the same safetensors file's header, written
atomically (one file: a crash leaves the previous checkpoint or the new one). A resumed run
is bit-identical to an uninterrupted one (tests/train/test_checkpoint.py).

A checkpoint records what it was trained on (`data`: model, corpus, windows, layers); resume
refuses, with the differences, when any of it changed."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..atomic import load_tensors, save_tensors, tensors_metadata
from ..sae import Sae

if TYPE_CHECKING:  # the trainer imports this module
    from .trainer import MultiTrainer

STATE_FILE = "state.safetensors"
ADAM_KEYS = ("exp_avg", "exp_avg_sq", "step")


class ResumeRefused(ValueError):
    """A checkpoint made from other data or settings than the build asking to resume."""


def has_checkpoint(folder: Path) -> bool:
    return (folder / STATE_FILE).exists()


def save_checkpoint(trainer: MultiTrainer, folder: Path, batches_done: int,
                    data: dict | None = None) -> None:
    """Everything needed to resume exactly after `batches_done` LM batches."""
    tensors, layers = {}, {}
    for h, s in trainer.layers.items():
        for name, p in s.sae.named_parameters():
            tensors[f"{h}/{name}"] = p.detach().contiguous()
            opt_state = s.trainer.opt.state.get(p, {})
            for key in ADAM_KEYS:
                if key in opt_state:
                    tensors[f"{h}/{name}/{key}"] = opt_state[key].contiguous()
        tensors[f"{h}/since_fired"] = s.trainer.since_fired
        if s.buffer is not None:
            tensors |= {f"{h}/buffer/{k}": v for k, v in s.buffer.state().items()}
        layers[h] = {"median_norm": s.median_norm, "n_tokens": s.trainer.n_tokens,
                     "step_no": s.trainer.step_no, "n_dropped": s.n_dropped,
                     "d_in": s.sae.cfg.d_in}
    meta = {"batches_done": batches_done, "step_no": trainer.step_no,
            "train_cfg": asdict(trainer.cfg), "layers": layers, "data": data or {}}
    save_tensors(folder / STATE_FILE, tensors, metadata={"meta": json.dumps(meta)})


def differences(saved: dict, now: dict) -> list[str]:
    """What differs between two flat settings dicts, in words."""
    return [f"{key} (checkpoint: {str(saved.get(key))[:80]}, now: {str(now.get(key))[:80]})"
            for key in sorted(saved.keys() | now.keys()) if saved.get(key) != now.get(key)]


def load_checkpoint(trainer: MultiTrainer, folder: Path, data: dict | None = None) -> int:
    """Restore a checkpoint into `trainer`; returns the number of LM batches already done.
    ResumeRefused when it was made with another training config or other `data`."""
    path = folder / STATE_FILE
    meta = json.loads(tensors_metadata(path)["meta"])
    changed = differences(meta["train_cfg"], asdict(trainer.cfg))
    changed += differences(meta.get("data", {}), data or {})
    if changed:
        raise ResumeRefused(f"cannot resume the build in {folder.parent}: its checkpoint was "
                            f"made with other settings: {'; '.join(changed)}. Delete "
                            f"{folder} to start again, or build to another folder.")
    tensors = load_tensors(path)
    for h, info in meta["layers"].items():
        sae = Sae(trainer.sae_config(h, info["d_in"]))
        state = trainer.layer_state(sae, info["median_norm"], seed=0)  # rng state restored below
        with torch.no_grad():
            for name, p in sae.named_parameters():
                p.copy_(tensors[f"{h}/{name}"])
                if f"{h}/{name}/step" in tensors:
                    state.trainer.opt.state[p] = {
                        key: tensors[f"{h}/{name}/{key}"].clone() for key in ADAM_KEYS}
        state.trainer.since_fired = tensors[f"{h}/since_fired"].clone()
        state.trainer.n_tokens, state.trainer.step_no = info["n_tokens"], info["step_no"]
        state.n_dropped = info["n_dropped"]
        if state.buffer is not None:
            state.buffer.load_state({k: tensors[f"{h}/buffer/{k}"] for k in ("data", "rng")})
        trainer.layers[h] = state
    trainer.step_no = meta["step_no"]
    return meta["batches_done"]
