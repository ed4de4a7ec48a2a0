"""Training on 2 processes with torch.distributed (gloo, CPU): data parallel gives the SAEs of
one process on the same tokens; the layer split trains each layer once, as one process
would; both resume from rank 0's checkpoint. Each mode's runs share one process group
(tests/train/ranked_train.py): starting processes is the slow part."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sae_core.atomic import load_tensors, tensors_metadata
from sae_core.train.loop import train_saes
from tests.tiny import tiny_lm
from tests.train.ranked_train import HOOKS
from tests.train.windows import _cfg, _windows

ROOT = Path(__file__).resolve().parents[2]
SHUFFLED = {"shuffle_batches": 4, "checkpoint_every": 2}
UNSHUFFLED = {"shuffle_batches": 0, "dead_tokens": 128}
"""One SAE step per LM batch, no shuffling: a data-parallel step is the one-process step on
the same rows, split across ranks; only the order of float sums differs."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(mode: str, runs: list[dict], world: int = 2) -> None:
    """Start `world` ranks as torchrun would (RANK, WORLD_SIZE, MASTER_* in the environment)."""
    env = os.environ | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
                        "WORLD_SIZE": str(world), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "tests.train.ranked_train", mode, json.dumps(runs)],
        cwd=ROOT, env=env | {"RANK": str(r), "LOCAL_RANK": str(r)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(world)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    # every rank's output when one fails: the failing rank's alone hides who left first
    assert all(p.returncode == 0 for p in procs), "\n".join(
        f"--- rank {r} (rc {p.returncode}):\n{out[-3000:]}"
        for r, (p, out) in enumerate(zip(procs, outs, strict=True)))


def _runs(tmp: Path, named: dict[str, dict]) -> tuple[dict[str, Path], list[dict]]:
    """Runs of one mode: each name's overrides, plus a run stopped after 4 batches and its
    resumption (the `SHUFFLED` config); the output file of each."""
    folder = tmp / "checkpoint"
    runs = [{"out": str(tmp / name), "overrides": o, "folder": None, "stop_after": 0}
            for name, o in named.items()]
    runs += [{"out": str(tmp / "stopped"), "overrides": SHUFFLED, "folder": str(folder),
              "stop_after": 4},
             {"out": str(tmp / "resumed"), "overrides": SHUFFLED, "folder": str(folder),
              "stop_after": 0}]
    return {run["out"].rsplit("/", 1)[1]: Path(run["out"]) for run in runs}, runs


@pytest.fixture(scope="module")
def data_parallel(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("data")
    outs, runs = _runs(tmp, {"topk": UNSHUFFLED, "relu": UNSHUFFLED | {"architecture": "relu"},
                             "whole": SHUFFLED})
    run_ranks("data", runs)
    return outs


@pytest.fixture(scope="module")
def layer_split(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("layers")
    outs, runs = _runs(tmp, {"whole": SHUFFLED})
    run_ranks("layers", runs)
    return outs


def _weights(path: Path, rank: int = 0) -> tuple[dict, dict]:
    path = Path(f"{path}.{rank}")
    return load_tensors(path), json.loads(tensors_metadata(path)["counts"])


def _one_process(overrides: dict) -> tuple[dict, dict]:
    # One thread, as each rank runs (OMP_NUM_THREADS=1): a matmul split over two threads
    # may sum in another order (bit differences seen on an AMD EPYC with AVX-512 bf16).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = train_saes(tiny_lm(), _windows(), HOOKS, _cfg(**overrides))
    finally:
        torch.set_num_threads(threads)
    tensors = {f"{h}/{name}": p.detach() for h, s in trainer.layers.items()
               for name, p in s.sae.named_parameters()}
    counts = {h: [s.trainer.n_tokens, s.n_dropped, s.trainer.step_no]
              for h, s in trainer.layers.items()}
    return tensors, counts


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_data_parallel_gives_the_one_process_saes(data_parallel, arch):
    (rank0, counts0), (rank1, counts1) = (_weights(data_parallel[arch], r) for r in (0, 1))
    alone, alone_counts = _one_process(UNSHUFFLED | {"architecture": arch})
    assert rank0.keys() == rank1.keys() == alone.keys()
    for name in alone:
        torch.testing.assert_close(rank0[name], rank1[name], rtol=0, atol=0)  # identical
        torch.testing.assert_close(rank0[name], alone[name], rtol=1e-4, atol=2e-5, msg=name)
    assert counts0 == counts1 == alone_counts  # tokens and steps counted once, over both


def test_layer_split_trains_each_layer_once_as_one_process_would(layer_split):
    rank0, counts = _weights(layer_split["whole"])
    alone, alone_counts = _one_process(SHUFFLED)
    assert counts == alone_counts  # every layer, each trained on every token once
    for name in alone:
        torch.testing.assert_close(rank0[name], alone[name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("mode", ["data", "layers"])
def test_both_modes_resume_from_rank_0s_checkpoint(data_parallel, layer_split, mode):
    outs = data_parallel if mode == "data" else layer_split
    folder = outs["resumed"].parent / "checkpoint"
    assert sorted(p.name for p in folder.iterdir()) == ["state.safetensors"]  # rank 0's only
    assert not Path(f"{outs['stopped']}.0").exists()  # it did stop
    (whole, whole_counts), (resumed, counts) = _weights(outs["whole"]), _weights(outs["resumed"])
    assert counts == whole_counts
    for name, t in whole.items():
        torch.testing.assert_close(resumed[name], t, rtol=0, atol=0, msg=name)
