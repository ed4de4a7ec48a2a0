"""SAE training throughput and quality: ours vs SAELens vs EleutherAI sparsify, one run.

Same activations for all (real residual activations of layer 15 of the embedded model,
positions >= 1), d_in 576, width 4608, k 32, batch 4096, one pass over the same tokens.
Peers run in their own venv (bench/setup_peers.sh). Prints tokens/s, held-out FVU and dead
fraction for each, and our step time against the dense bf16 encoder matmul measured here
(step_vs_matmul in the RESULT line; the issue's target is 2 or less).

    python bench/train_throughput.py [--tokens 262144] [--skip-peers]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time

import torch
from common import OUT, ROOT, layer_activations, load_acts

from sae_core.config import SaeConfig, TrainConfig
from sae_core.metrics import RunningFvu
from sae_core.sae import Sae
from sae_core.topk import topk_sorted
from sae_core.train.sparse_kernels import latent_order
from sae_core.train.trainer import SaeTrainer

WIDTH, K, BATCH, LR = 4608, 32, 4096, 3e-3


def warm_kernels() -> float:
    """Seconds to compile (or load from numba's cache) the step's CPU kernels, kept out of
    the training time: a one-time cost per install, printed on its own."""
    t0 = time.perf_counter()
    for dtype in (torch.bfloat16, torch.float32):
        topk_sorted(torch.randn(4, 64).to(dtype), 2)
    latent_order(torch.zeros(4, 2, dtype=torch.long), 3)
    return time.perf_counter() - t0


def train_ours(train: torch.Tensor, bf16: bool) -> tuple[float, Sae, SaeTrainer]:
    cfg = TrainConfig(k=K, lr=LR, batch_tokens=BATCH, bf16=bf16)
    sae = Sae.init_from_data(SaeConfig(d_in=train.shape[1], d_sae=WIDTH, k=K), train[:BATCH],
                             encoder_scale=cfg.encoder_scale())
    n_steps = len(train) // BATCH
    trainer = SaeTrainer(sae, cfg, n_steps)
    t0 = time.perf_counter()
    for i in range(n_steps):
        trainer.step(train[i * BATCH:(i + 1) * BATCH])
    return time.perf_counter() - t0, sae, trainer


@torch.inference_mode()
def evaluate(sae: Sae, test: torch.Tensor) -> RunningFvu:
    run = RunningFvu()
    for start in range(0, len(test), BATCH):
        x = test[start:start + BATCH]
        out = sae(x)
        run.update(x, out.x_hat, out.acts)
    return run


def encoder_matmul_seconds(d_in: int, repeats: int = 20) -> float:
    """Time of the dense (batch x d_in) @ (d_in x width) matmul in bf16: the step's floor."""
    a = torch.randn(BATCH, d_in).bfloat16()
    b = torch.randn(d_in, WIDTH).bfloat16()
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return (time.perf_counter() - t0) / repeats


def run_peer(lib: str, acts_path) -> dict:
    subprocess.run(["bash", str(ROOT / "bench/setup_peers.sh")], check=True)
    out = OUT / f"peer_{lib}.json"
    subprocess.run([
        str(ROOT / ".venv-bench/bin/python"), str(ROOT / "bench/peers.py"), "--lib", lib,
        "--acts", str(acts_path), "--width", str(WIDTH), "--k", str(K), "--batch", str(BATCH),
        "--lr", str(LR), "--threads", str(torch.get_num_threads()), "--out", str(out),
    ], check=True)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64 * BATCH, help="training tokens")
    parser.add_argument("--test-tokens", type=int, default=16_000)
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--skip-peers", action="store_true")
    args = parser.parse_args()
    acts_path = layer_activations(args.layer, args.tokens, args.test_tokens)
    train, test = load_acts(acts_path)
    print(f"layer {args.layer}: {len(train)} train / {len(test)} held-out activations, "
          f"d_in {train.shape[1]}, {torch.get_num_threads()} threads")

    print(f"step kernels compiled or loaded in {warm_kernels():.2f} s (not timed below)")
    results = {}
    for name, bf16 in (("ours", True), ("ours_fp32", False)):
        seconds, sae, trainer = train_ours(train, bf16)
        ev = evaluate(sae, test)
        results[name] = {"tok_s": len(train) // BATCH * BATCH / seconds, "fvu": ev.fvu(),
                         "dead_frac": ev.dead_fraction(), "l0": ev.l0(),
                         "step_ms": 1000 * seconds / trainer.step_no}
    if not args.skip_peers:
        for lib in ("saelens", "sparsify"):
            results[lib] = run_peer(lib, acts_path)

    matmul_ms = 1000 * encoder_matmul_seconds(train.shape[1])
    print(f"\n{'trainer':<12}{'tokens/s':>10}{'FVU':>8}{'dead %':>8}{'L0':>6}")
    for name, r in results.items():
        print(f"{name:<12}{r['tok_s']:>10.0f}{r['fvu']:>8.4f}{100 * r['dead_frac']:>8.2f}"
              f"{r['l0']:>6.1f}")
    step_ms = results["ours"]["step_ms"]
    print(f"\nour step: {step_ms:.1f} ms; dense bf16 encoder matmul alone: {matmul_ms:.1f} ms "
          f"({2 * BATCH * train.shape[1] * WIDTH / matmul_ms / 1e6:.0f} GFLOP/s)")
    fields = {
        "ours_tok_s": results["ours"]["tok_s"], "ours_fvu": results["ours"]["fvu"],
        "ours_dead": results["ours"]["dead_frac"],
        "ours_fp32_tok_s": results["ours_fp32"]["tok_s"],
        "ours_fp32_fvu": results["ours_fp32"]["fvu"],
    }
    for lib in ("saelens", "sparsify"):
        if lib in results:
            fields |= {f"{lib}_tok_s": results[lib]["tok_s"], f"{lib}_fvu": results[lib]["fvu"],
                       f"{lib}_dead": results[lib]["dead_frac"]}
    if "saelens" in results:
        fields["speedup_vs_saelens"] = results["ours"]["tok_s"] / results["saelens"]["tok_s"]
    fields["roofline_share"] = matmul_ms / step_ms
    # the target: our step within 2x of the encoder matmul alone
    fields |= {"step_ms": step_ms, "matmul_ms": matmul_ms, "step_vs_matmul": step_ms / matmul_ms}
    print("RESULT " + " ".join(f"{k}={v:.4g}" for k, v in fields.items()))


if __name__ == "__main__":
    main()
