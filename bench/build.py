"""End-to-end speed of the all-layer build against a plain forward pass, same batches.

Trains all 30 residual SAEs of the embedded model (default settings) on the first
`--batches` LM batches of the default corpus, then times a plain bf16 forward of the full
model over exactly those batches. The ratio says what training 30 SAEs costs on top of
just reading the model.

    python bench/build.py [--batches 20]
"""

from __future__ import annotations

import argparse
import time

import torch
from common import load_lm, load_texts, token_windows

from sae_core.config import TrainConfig
from sae_core.train.loop import train_saes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--seq-len", type=int, default=256)
    args = parser.parse_args()
    cfg = TrainConfig()
    lm = load_lm()
    per_batch = cfg.lm_batch_tokens // args.seq_len
    windows = token_windows(lm.tokenizer, load_texts(), args.seq_len)[: args.batches * per_batch]
    n_tokens = windows.numel()

    t0 = time.perf_counter()
    train_saes(lm, windows, lm.resid_hookpoints(), cfg)
    build_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for start in range(0, len(windows), per_batch):
            lm.model(windows[start:start + per_batch], use_cache=False)
    forward_s = time.perf_counter() - t0

    build_tok_s, forward_tok_s = n_tokens / build_s, n_tokens / forward_s
    print(f"{n_tokens} tokens, {lm.n_layers} layers, {torch.get_num_threads()} threads")
    print(f"build (forward + SAE steps for every layer): {build_tok_s:.0f} tokens/s")
    print(f"plain bf16 forward of the full model:        {forward_tok_s:.0f} tokens/s")
    print(f"RESULT build_tok_s={build_tok_s:.0f} forward_tok_s={forward_tok_s:.0f} "
          f"build_vs_forward={build_tok_s / forward_tok_s:.3f}")


if __name__ == "__main__":
    main()
