"""What a build needs in memory, checked before any training against what the device has.

The estimate adds what lives for the whole build (the model's weights, each SAE with its
gradients and two Adam moments, the shuffle buffers) to the largest transient (one LM
forward's activations and attention scores, one SAE step's pre-activations). Activations are
streamed batch by batch, never all held, so the corpus size does not enter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import TrainConfig
from .lm import LM
from .train.ranks import Ranks


class DoesNotFit(ValueError):
    """A build that would run out of memory on its device."""


HEADROOM = 1.2
"""Allocators fragment and libraries keep workspaces: ask for 20% more than the estimate."""


@dataclass(frozen=True)
class MemoryEstimate:
    model: int
    saes: int
    """Weights, gradients and Adam moments of the SAEs this process trains."""
    buffers: int
    transient: int

    @property
    def total(self) -> int:
        return self.model + self.saes + self.buffers + self.transient

    def parts(self) -> str:
        return ", ".join(f"{name} {gib(getattr(self, name))}"
                         for name in ("model", "saes", "buffers", "transient"))


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


def training_memory(lm: LM, n_saes: int, cfg: TrainConfig, seq_len: int,
                    ranks: Ranks) -> MemoryEstimate:
    """The memory one process of a build needs, in bytes, by part."""
    d = lm.d_model
    d_sae = cfg.sae_width(d)
    model = sum(p.numel() * p.element_size() for p in lm.model.parameters())
    sae_floats = 2 * d_sae * d + d_sae + d
    saes = n_saes * sae_floats * 4 * 4  # fp32 weights, gradients, two Adam moments
    rows = cfg.lm_batch_tokens // ranks.rows_share  # LM tokens one forward of this rank sees
    buffers = 0
    if cfg.shuffle_batches >= 2:
        buffers = n_saes * cfg.shuffle_batches * rows * d * 2  # bf16 rows
    heads = getattr(lm.model.config, "num_attention_heads", 1)
    forward = rows * d * 4 * (n_saes + 8) + (rows // seq_len) * heads * seq_len**2 * 4
    sae_step = cfg.batch_tokens * d_sae * 4 * 2  # pre-activations and their top-k scratch
    return MemoryEstimate(model, saes, buffers, forward + sae_step)


def available_memory(device: torch.device) -> int | None:
    """Free bytes on `device` now (CUDA: the driver's count; CPU: MemAvailable, or the
    cgroup's limit when lower); None where it cannot be read."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    free = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
    except OSError:
        return None
    limit = _cgroup_limit()
    return min(free, limit) if free is not None and limit is not None else free


def _cgroup_limit() -> int | None:
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def check_memory(estimate: MemoryEstimate, device: torch.device,
                 available: int | None = None) -> None:
    """A clear refusal, before any work, when the build cannot fit on the device."""
    free = available_memory(device) if available is None else available
    need = int(estimate.total * HEADROOM)
    if free is None or need <= free:
        return
    raise DoesNotFit(
        f"this build needs about {gib(need)} on {device} ({estimate.parts()}, plus "
        f"{round(100 * (HEADROOM - 1))}% headroom) but {gib(free)} is free. Train fewer "
        "layers or sites (--layers, --site), a smaller --expansion, fewer --shuffle-batches "
        "or a smaller --lm-batch-tokens; or spread the layers over several processes "
        "(torchrun ... --parallel layers).")
