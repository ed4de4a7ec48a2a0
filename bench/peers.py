"""Train a TopK SAE with a peer library (SAELens or EleutherAI sparsify) and report speed/quality.

Runs in its own venv (bench/setup_peers.sh), never the project's .venv:
    .venv-bench/bin/python bench/peers.py --lib saelens --acts ACTS.safetensors --width 4608 \
        --k 32 --batch 4096 --lr 3e-3 --threads 2 --out RESULT.json

ACTS holds fp32 `train` [N, d_in] and `test` [M, d_in]. One in-order pass over `train` (last
partial batch dropped) with each library's own loss, optimizer and step; then FVU, dead fraction
and L0 on `test`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from sae_core.metrics import RunningFvu  # noqa: E402 (imports only torch: fine in the peer venv)

# x -> (x_hat, fired), fired a bool [rows, width] mask of latents nonzero after TopK
Codec = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
EVAL_CHUNK = 4096


def batches(train: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    """In-order batches, dropping the last partial one."""
    for i in range(train.shape[0] // size):
        yield train[i * size : (i + 1) * size]


def train_saelens(train: torch.Tensor, args: argparse.Namespace) -> tuple[float, Codec]:
    from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig

    sae = TopKTrainingSAE(
        TopKTrainingSAEConfig(
            d_in=train.shape[1], d_sae=args.width, k=args.k, dtype="float32", device="cpu"
        )
    )
    # SAELens 6.x dropped b_dec_init_method and starts b_dec at zero; on activations with a
    # large mean offset that leaves ~99% of latents dead after one pass. Do by hand what its
    # old b_dec_init_method="mean" did (untimed, like the old init).
    sae.b_dec.data = train.mean(0)
    n_steps = train.shape[0] // args.batch
    cfg = SAETrainerConfig(
        total_training_samples=n_steps * args.batch,  # fit() stops after exactly n_steps
        train_batch_size_samples=args.batch,
        lr=args.lr,
        lr_end=args.lr,  # constant scheduler; the trainer asserts lr_end is set
        device="cpu",
        autocast=False,
    )
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=batches(train, args.batch))
    # Timed whole, no warm-up: the first step's one-off allocations are counted.
    start = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - start

    sae.eval()

    def codec(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        acts = sae.encode(x)
        return sae.decode(acts), acts != 0

    return seconds, codec


def train_sparsify(train: torch.Tensor, args: argparse.Namespace) -> tuple[float, Codec]:
    from sparsify import SparseCoder, SparseCoderConfig
    from transformers import get_linear_schedule_with_warmup

    sae = SparseCoder(
        train.shape[1], SparseCoderConfig(num_latents=args.width, k=args.k), dtype=torch.float32
    )
    n_steps = train.shape[0] // args.batch
    # Mirrors sparsify.Trainer's optimizer="adam" branch, not its default "signum", so all
    # three trainers use Adam (bitsandbytes absent -> torch Adam,
    # linear decay to 0 over the run). Warm-up is 0: its default 1000 exceeds one short pass.
    opt = torch.optim.Adam(sae.parameters(), lr=args.lr)
    sched = get_linear_schedule_with_warmup(opt, 0, n_steps)

    # Timed whole, no warm-up: the first step's one-off allocations are counted.
    start = time.perf_counter()
    for step, x in enumerate(batches(train, args.batch)):
        if step == 0:  # the Trainer sets b_dec to the first batch's mean
            sae.b_dec.data = x.mean(0)
        sae.set_decoder_norm_to_unit_norm()
        total_variance = (x - x.mean(0)).pow(2).sum()
        # auxk_alpha defaults to 0 in TrainConfig, so the Trainer passes no dead mask (no AuxK).
        out = sae(x, x, dead_mask=None, total_variance=total_variance)
        out.fvu.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        sched.step()
    seconds = time.perf_counter() - start

    def codec(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        top_acts, top_idx, _ = sae.encode(x)
        fired = torch.zeros(x.shape[0], args.width, dtype=torch.bool)
        fired.scatter_(1, top_idx, top_acts > 0)
        return sae.decode(top_acts, top_idx), fired

    return seconds, codec


@torch.no_grad()
def evaluate(codec: Codec, test: torch.Tensor) -> dict[str, float]:
    """FVU against the test mean, share of latents never firing on test, mean L0: the same
    accumulator that scores our SAEs (sae_core.metrics.RunningFvu)."""
    run = RunningFvu()
    for x in test.split(EVAL_CHUNK):
        x_hat, fired = codec(x)
        run.update(x, x_hat, fired)
    return {"fvu": run.fvu(), "dead_frac": run.dead_fraction(), "l0": run.l0()}


TRAINERS = {"saelens": (train_saelens, "sae-lens"), "sparsify": (train_sparsify, "eai-sparsify")}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lib", choices=sorted(TRAINERS), required=True)
    p.add_argument("--acts", required=True)
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--k", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--out", required=True)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    acts = load_file(args.acts)
    train, test = acts["train"].float(), acts["test"].float()
    fit, package = TRAINERS[args.lib]
    seconds, codec = fit(train, args)
    tokens = train.shape[0] // args.batch * args.batch
    result = {
        "lib": args.lib,
        "tokens": tokens,
        "seconds": seconds,
        "tok_s": tokens / seconds,
        **evaluate(codec, test),
        "version": version(package),
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
