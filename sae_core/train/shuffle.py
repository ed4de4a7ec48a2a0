"""Mix activations across LM batches before SAE steps.

One LM batch is 16 windows of 256 consecutive tokens: its tokens are strongly correlated,
which slows SAE training (held-out FVU at layer 15 after 262k tokens: 0.263 in order,
0.253 fully shuffled). The buffer holds the last few batches; each new batch takes the slots
of as many random rows, and those rows are the training batch. Every token is still trained
on exactly once: what is left at the end is drained in random order.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor


class ShuffleBuffer:
    def __init__(self, capacity: int, d: int, seed: int, device: torch.device | str = "cpu"):
        self.data = torch.empty(capacity, d, dtype=torch.bfloat16, device=device)
        """bf16 halves memory; training on bf16-rounded rows gave the same held-out FVU
        (layer 15: 0.2421 vs 0.2425 from fp32 rows)."""
        self.filled = 0
        self.gen = torch.Generator().manual_seed(seed)
        """On the CPU: the same order on every device."""

    def push(self, x_ND: Tensor) -> Tensor | None:
        """Add rows; return a training batch of as many random older rows, or None while
        the buffer is still filling."""
        n = len(x_ND)
        capacity = len(self.data)
        if n > capacity // 2:
            raise ValueError(f"batch of {n} rows needs a buffer of at least {2 * n}")
        if self.filled + n <= capacity:
            self.data[self.filled:self.filled + n] = x_ND
            self.filled += n
            return None
        slots = torch.randperm(self.filled, generator=self.gen)[:n].to(self.data.device)
        out = self.data[slots].float()
        self.data[slots] = x_ND.to(torch.bfloat16)
        return out

    def drain(self, batch: int) -> Iterator[Tensor]:
        """The remaining rows in random order, in batches (the last one may be smaller)."""
        order = torch.randperm(self.filled, generator=self.gen).to(self.data.device)
        self.filled = 0
        for start in range(0, len(order), batch):
            yield self.data[order[start:start + batch]].float()

    def state(self) -> dict[str, Tensor]:
        return {"data": self.data[:self.filled].clone(), "rng": self.gen.get_state()}

    def load_state(self, state: dict[str, Tensor]) -> None:
        self.filled = len(state["data"])
        self.data[:self.filled] = state["data"].to(self.data.device)
        self.gen.set_state(state["rng"])
