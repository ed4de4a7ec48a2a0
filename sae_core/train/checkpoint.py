"""Resumable training state of a `MultiTrainer`: weights, Adam moments, counters and
shuffle buffers as safetensors, the rest as JSON. A resumed run is bit-identical to an
uninterrupted one (tests/train/test_checkpoint.py)."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from ..sae import Sae

if TYPE_CHECKING:  # the trainer imports this module
    from .trainer import MultiTrainer

STATE_FILE, META_FILE = "state.safetensors", "state.json"
ADAM_KEYS = ("exp_avg", "exp_avg_sq", "step")


def has_checkpoint(folder: Path) -> bool:
    return (folder / META_FILE).exists()


def save_checkpoint(trainer: MultiTrainer, folder: Path, batches_done: int) -> None:
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
            "train_cfg": asdict(trainer.cfg), "layers": layers}
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / STATE_FILE))
    (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)  # a crash mid-save leaves the previous checkpoint intact


def load_checkpoint(trainer: MultiTrainer, folder: Path) -> int:
    """Restore a checkpoint into `trainer`; returns the number of LM batches already done."""
    meta = json.loads((folder / META_FILE).read_text())
    if meta["train_cfg"] != asdict(trainer.cfg):
        raise ValueError(f"checkpoint {folder} was made with another training config")
    tensors = load_file(str(folder / STATE_FILE))
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
