"""Throughput on a CUDA GPU: the layer-15 SAE training benchmark and a 30-layer build.

- ours_tok_s: one TopK SAE (width 4608, k 32, batches of 4096) trained on layer-15
  activations of the embedded model held on the GPU (train_throughput.py's run, on CUDA).
- build_tok_s: the all-layer build (train_saes, 30 residual SAEs, default settings) on the
  first `--batches` LM batches; forward_tok_s: a plain bf16 forward of the full model over
  the same batches, the build's floor.

On a machine without CUDA it says so and exits 0 (`--device cpu` runs the same code on the
CPU at a small size, to check the script).

    python bench/gpu.py [--batches 20] [--tokens 262144]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from common import layer_activations, load_acts, load_lm, load_texts, token_windows
from train_throughput import BATCH, evaluate, train_ours

from sae_core.config import TrainConfig
from sae_core.precision import autocast, resolve_device
from sae_core.train.loop import train_saes


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sae_throughput(device: torch.device, tokens: int) -> tuple[float, float]:
    """(tokens/s, held-out FVU) of one layer-15 SAE trained on the device."""
    train, test = load_acts(layer_activations(15, tokens, 16_000))
    train, test = train.to(device), test.to(device)
    synchronize(device)
    seconds, sae, _ = train_ours(train, bf16=True)
    synchronize(device)
    return len(train) // BATCH * BATCH / seconds, evaluate(sae, test).fvu()


def build_throughput(device: torch.device, batches: int) -> tuple[float, float, int]:
    """(build tokens/s, plain forward tokens/s, layers) on the same LM batches."""
    cfg = TrainConfig(checkpoint_every=0)
    lm = load_lm(device=device)
    per_batch = cfg.lm_batch_tokens // 256
    windows = token_windows(lm.tokenizer, load_texts(), 256)[: batches * per_batch]
    t0 = time.perf_counter()
    train_saes(lm, windows, lm.resid_hookpoints(), cfg)
    synchronize(device)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch.inference_mode(), autocast(True, device):
        for start in range(0, len(windows), per_batch):
            lm.model(windows[start:start + per_batch].to(device), use_cache=False)
    synchronize(device)
    forward_s = time.perf_counter() - t0
    return windows.numel() / build_s, windows.numel() / forward_s, lm.n_layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=64 * BATCH)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA GPU here: nothing measured (run this on a GPU machine)")
        print("RESULT device=none")
        sys.exit(0)
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    ours_tok_s, fvu = sae_throughput(device, args.tokens)
    build_tok_s, forward_tok_s, n_layers = build_throughput(device, args.batches)
    print(f"{name}: layer-15 SAE {ours_tok_s:.0f} tokens/s (held-out FVU {fvu:.3f}); "
          f"{n_layers}-layer build {build_tok_s:.0f} tokens/s against a plain forward's "
          f"{forward_tok_s:.0f} ({build_tok_s / forward_tok_s:.3f} of it)")
    print(f"RESULT device={name.replace(' ', '_')} ours_tok_s={ours_tok_s:.0f} "
          f"build_tok_s={build_tok_s:.0f} forward_tok_s={forward_tok_s:.0f} "
          f"build_vs_forward={build_tok_s / forward_tok_s:.3f} fvu={fvu:.4f}")


if __name__ == "__main__":
    main()
