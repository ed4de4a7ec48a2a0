"""Tiny token windows and a fast training config for the trainer and checkpoint tests."""

import torch

from sae_core.config import TrainConfig

HOOKS = ["layers.0", "layers.2"]


def _windows(n=48, seq=16, seed=0):
    return torch.randint(3, 64, (n, seq), generator=torch.Generator().manual_seed(seed))


def _cfg(**kw):
    base = dict(expansion=4, k=4, batch_tokens=64, lm_batch_tokens=64, lr=3e-3, dead_tokens=64,
                bf16=False)
    return TrainConfig(**(base | kw))
