"""Training on 1 and 2 processes (torch.distributed, gloo on the CPU), same tokens and seed.

Trains SAEs for `--layers` of the embedded model on the first `--batches` LM batches of the
default corpus: once in one process (all threads, for tokens/s; and on one thread, as each
rank runs), then with `torchrun --nproc_per_node 2` data parallel (one thread each) and by
layers. Prints LM tokens/s of each, the largest difference between the one-thread
one-process SAE weights and each split's (fp32, one SAE step per LM batch and no shuffling,
so the runs must agree up to the order of float sums), the same difference for the
all-threads process as the control (the thread count alone reorders sums), and the share of
the data-parallel time spent in all-reduce. On 2 cores, 2 processes cannot be
faster: this measures correctness and the cost of communication.

    python bench/distributed.py [--batches 8] [--layers 0,6,12,18,24,29]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
import torch.distributed as dist
from common import OUT, ROOT, load_lm, load_texts, token_windows

from sae_core.atomic import load_tensors, save_tensors, tensors_metadata
from sae_core.config import TrainConfig
from sae_core.train.checkpoint import gather_layers
from sae_core.train.loop import train_saes
from sae_core.train.ranks import from_environment

CFG = TrainConfig(bf16=False, shuffle_batches=0, batch_tokens=4096, lm_batch_tokens=4096,
                  checkpoint_every=0)
"""fp32, one SAE step per LM batch and no shuffling: data parallel must equal one process."""


def worker(args: argparse.Namespace) -> None:
    """One rank (or the single process): train, write SAEs and timings from rank 0."""
    ranks = from_environment(args.mode, torch.device("cpu"))
    comm = [0.0]
    if ranks.world > 1:  # time every all-reduce the trainer makes
        real = dist.all_reduce

        def timed(*a, **kw):
            t0 = time.perf_counter()
            out = real(*a, **kw)
            comm[0] += time.perf_counter() - t0
            return out
        dist.all_reduce = timed
    lm = load_lm()
    per_batch = CFG.lm_batch_tokens // 256
    windows = token_windows(lm.tokenizer, load_texts(), 256)[: args.batches * per_batch]
    hookpoints = [f"layers.{i}" for i in args.layers]
    t0 = time.perf_counter()
    trainer = train_saes(lm, windows, hookpoints, CFG, ranks=ranks)
    gather_layers(trainer)
    seconds = time.perf_counter() - t0
    if ranks.is_main:
        save_tensors(args.out, {h: s.sae.W_dec.detach() for h, s in trainer.layers.items()},
                     metadata={"timing": json.dumps({
                         "seconds": seconds, "tokens": windows.numel(), "comm_s": comm[0],
                         "threads": torch.get_num_threads()})})


def launch(mode: str, n_proc: int, layers: str, batches: int,
           one_thread: bool = False) -> tuple[dict, dict]:
    out = OUT / f"distributed_{mode}_{n_proc}_{int(one_thread)}.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={n_proc}", str(ROOT / "bench/distributed.py"), "--worker",
           "--mode", mode, "--layers", layers, "--batches", str(batches), "--out", str(out)]
    if n_proc == 1:  # one process, all the cores: no torchrun (it would set 1 thread)
        cmd = [sys.executable, *cmd[5:]]
    env = os.environ | ({"OMP_NUM_THREADS": "1"} if n_proc > 1 or one_thread else {})
    subprocess.run(cmd, check=True, env=env)
    return load_tensors(out), json.loads(tensors_metadata(out)["timing"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--layers", default="0,6,12,18,24,29")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="data", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.layers = [int(x) for x in args.layers.split(",")]
        return worker(args)
    OUT.mkdir(parents=True, exist_ok=True)
    one, t1 = launch("data", 1, args.layers, args.batches)
    ref, _ = launch("data", 1, args.layers, args.batches, one_thread=True)
    two, t2 = launch("data", 2, args.layers, args.batches)
    split, t3 = launch("layers", 2, args.layers, args.batches)

    def largest(a: dict, b: dict) -> float:
        return max(float((a[h] - b[h]).abs().max()) for h in a)
    # against one process on one thread, as each rank runs: what remains is the ranks' doing;
    # the control is what the thread count alone changes (float sums in another order, which
    # top-k choices amplify over steps)
    diff, split_diff, threads_diff = largest(ref, two), largest(ref, split), largest(ref, one)
    tok = {name: t["tokens"] / t["seconds"] for name, t in (("1", t1), ("2", t2), ("2l", t3))}
    comm_share = t2["comm_s"] / t2["seconds"]
    print(f"{t1['tokens']} LM tokens, layers {args.layers}, fp32")
    print(f"1 process ({t1['threads']} threads):      {tok['1']:.0f} tokens/s")
    print(f"2 processes, data parallel:   {tok['2']:.0f} tokens/s "
          f"(all-reduce {100 * comm_share:.1f}% of the time)")
    print(f"2 processes, by layers:       {tok['2l']:.0f} tokens/s")
    print(f"largest |W_dec difference| vs 1 process on 1 thread: data parallel {diff:.2e}, "
          f"by layers {split_diff:.2e}; control: 1 process on {t1['threads']} threads "
          f"{threads_diff:.2e}")
    print(f"RESULT tok_s_1={tok['1']:.0f} tok_s_2={tok['2']:.0f} max_abs_diff={diff:.3g} "
          f"tok_s_2_layers={tok['2l']:.0f} layers_max_abs_diff={split_diff:.3g} "
          f"threads_max_abs_diff={threads_diff:.3g} comm_share={comm_share:.3f}")


if __name__ == "__main__":
    main()
