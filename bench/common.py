"""Shared benchmark helpers: real activations of the embedded model, cached on disk."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out"

from sae_core.activations import keep_mask  # noqa: E402
from sae_core.corpus import load_texts, split_windows, token_windows  # noqa: E402
from sae_core.hooks import run_captured  # noqa: E402
from sae_core.lm import load_lm  # noqa: E402


def layer_activations(layer: int, n_train: int, n_test: int, seq_len: int = 256) -> Path:
    """Residual activations after block `layer`, positions >= 1, massive tokens dropped.

    Train rows come from the first windows of the shuffled corpus, test rows from held-out
    windows at its end. Cached in bench/out/.
    """
    path = OUT / f"acts_layers.{layer}_{n_train}_{n_test}.safetensors"
    if path.exists():
        return path
    lm = load_lm()
    windows = token_windows(lm.tokenizer, load_texts(), seq_len)
    train_w, test_w = split_windows(windows, 64)
    train_w = train_w[torch.randperm(len(train_w), generator=torch.Generator().manual_seed(0))]
    hook = f"layers.{layer}"
    median = None
    out = {}
    t0 = time.perf_counter()
    for name, source, want in (("train", train_w, n_train), ("test", test_w, n_test)):
        rows, have = [], 0
        for start in range(0, len(source), 16):
            acts = run_captured(lm, source[start:start + 16], [hook])[hook]
            if median is None:
                median = float(acts[:, 1:].float().norm(dim=-1).median())
            rows.append(acts[keep_mask(acts, median)].float())
            have += len(rows[-1])
            if have >= want:
                break
        if have < want:
            raise RuntimeError(f"corpus gave only {have} {name} activations, need {want}")
        out[name] = torch.cat(rows)[:want].contiguous()
    print(f"extracted {n_train + n_test} activations of {hook} in "
          f"{time.perf_counter() - t0:.0f} s")
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path))
    return path


def load_acts(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = load_file(str(path))
    return tensors["train"], tensors["test"]
