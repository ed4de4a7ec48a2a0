"""One rank of a training run on several processes (tests/train/test_distributed.py starts
each with the environment torchrun gives: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT).

argv: parallel mode, then a JSON list of runs, done in order in one process group (starting
processes is the slow part): each {"out": file for this rank's SAEs (the rank number is
appended), "overrides": TrainConfig fields, "folder": checkpoint folder or null, "stop_after":
batches after which every rank stops (0: run to the end)}. Layers mode: rank 0 has gathered
every layer before writing."""

import json
import sys
from pathlib import Path

import torch

from sae_core.atomic import save_tensors
from sae_core.train import loop
from sae_core.train.checkpoint import gather_layers
from sae_core.train.ranks import from_environment
from tests.tiny import tiny_lm
from tests.train.windows import _cfg, _windows

HOOKS = ["layers.0", "layers.1", "layers.2"]


class Stopped(Exception):
    """Every rank stops after the same checkpoint, as a crash of the whole job would."""


def main() -> None:
    mode, runs = sys.argv[1], json.loads(sys.argv[2])
    ranks = from_environment(mode, torch.device("cpu"))
    save = loop.save_checkpoint
    for run in runs:
        def save_then_maybe_stop(trainer, where, done, data, stop=run["stop_after"]):
            save(trainer, where, done, data)
            if done == stop:
                # rank 0 writes after the ranks' last exchange: without this, another rank
                # could resume from the checkpoint before (and train batches twice)
                ranks.barrier()
                raise Stopped

        loop.save_checkpoint = save_then_maybe_stop
        try:
            trainer = loop.train_saes(
                tiny_lm(), _windows(), HOOKS, _cfg(**run["overrides"]), ranks=ranks,
                checkpoint_dir=Path(run["folder"]) if run["folder"] else None)
        except Stopped:
            continue
        gather_layers(trainer)
        tensors = {f"{h}/{name}": p.detach() for h, s in trainer.layers.items()
                   for name, p in s.sae.named_parameters()}
        counts = {h: [s.trainer.n_tokens, s.n_dropped, s.trainer.step_no]
                  for h, s in trainer.layers.items()}
        save_tensors(f"{run['out']}.{ranks.rank}", tensors,
                     metadata={"counts": json.dumps(counts)})

if __name__ == "__main__":
    main()
