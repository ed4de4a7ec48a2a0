"""bf16 where the CPU runs it natively, fp32 elsewhere.

bf16 is the speed lever on CPUs with AVX-512 bf16 or AMX (~3x faster matmuls than fp32). On
CPUs without it (AVX2 only) oneDNN emulates bf16: a 1024 x 576 @ 576 x 1152 matmul ran at
1.6 GFLOP/s in bf16 against 57.8 in fp32 on such a machine. So every `bf16=True` in the
library means "bf16 if native": the same atlas builds on both, fast on each.
"""

from __future__ import annotations

from functools import cache

import torch


@cache
def bf16_native() -> bool:
    """Whether this CPU has native bf16 matmuls (oneDNN's own check)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def use_bf16(requested: bool) -> bool:
    """bf16 only when asked for and native here."""
    return requested and bf16_native()


def matmul_dtype(requested: bool) -> torch.dtype:
    return torch.bfloat16 if use_bf16(requested) else torch.float32


def autocast(requested: bool) -> torch.autocast:
    """CPU autocast to bf16 when asked for and native here; a no-op otherwise."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16(requested))
