"""What a lab experiment trains and scores on: one hookpoint of a model over a token budget
of the corpus (train rows, held-out rows, held-out windows for the CE loss), or samples of
the synthetic benchmark with the dictionary that made them. Every recipe in one experiment
sees the same rows in the same order, so their numbers compare."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..activations import OUTLIER_FACTOR, keep_mask
from ..corpus import load_texts, split_ids, token_windows
from ..hooks import run_captured
from ..lm import LM
from .synthetic import SyntheticConfig, sample, true_features


@dataclass(frozen=True)
class LabData:
    name: str
    """Where the rows come from, for tables and file names."""
    train_ND: Tensor
    test_ND: Tensor
    true_FD: Tensor | None = None
    """Synthetic: the planted dictionary (unit rows) the SAEs should recover."""
    hookpoint: str | None = None
    median_norm: float | None = None
    heldout_WL: Tensor | None = None
    """Model: held-out windows for CE loss recovered (none of them trained on)."""


def layer_data(lm: LM, hookpoint: str, *, tokens: int = 131_072, test_windows: int = 16,
               seq_len: int = 256, corpus: str = "default", bf16: bool = True,
               outlier_factor: float = OUTLIER_FACTOR, seed: int = 0) -> LabData:
    """Activations at `hookpoint` over about `tokens` corpus tokens (whole windows, drawn at
    random), without position 0 and massive activations as the build drops them, and the
    same of `test_windows` held-out windows."""
    lm.module_for(hookpoint)  # a bad layer fails before any work
    windows = token_windows(lm.tokenizer, load_texts(corpus), seq_len)
    train_ids, test_ids = split_ids(len(windows), test_windows, seed)
    n_train = min(len(train_ids), max(tokens // seq_len, 1))
    pick = torch.randperm(len(train_ids), generator=torch.Generator().manual_seed(seed))
    train_WL = windows[train_ids[pick[:n_train]]]
    heldout_WL = windows[test_ids]
    first = run_captured(lm, train_WL[:16], [hookpoint], bf16=bf16)[hookpoint]
    median = float(first[:, 1:].float().norm(dim=-1).median())

    def rows(windows_WL: Tensor) -> Tensor:
        out = []
        for start in range(0, len(windows_WL), 16):
            acts = run_captured(lm, windows_WL[start:start + 16], [hookpoint], bf16=bf16)
            acts = acts[hookpoint]
            out.append(acts[keep_mask(acts, median, outlier_factor)].float().cpu())
        return torch.cat(out)

    return LabData(name=f"{lm.name} {hookpoint}", train_ND=rows(train_WL),
                   test_ND=rows(heldout_WL), hookpoint=hookpoint, median_norm=median,
                   heldout_WL=heldout_WL)


def synthetic_data(cfg: SyntheticConfig, n_train: int, n_test: int) -> LabData:
    """Train and test samples of the synthetic benchmark (independent draws) and its
    dictionary."""
    def draw(n: int, offset: int) -> Tensor:
        return sample(cfg, n, torch.Generator().manual_seed(cfg.seed + offset))

    return LabData(name="synthetic", train_ND=draw(n_train, 100), test_ND=draw(n_test, 200),
                   true_FD=true_features(cfg))
