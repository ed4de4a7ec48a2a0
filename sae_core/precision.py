"""Devices, and bf16 where the device runs it natively, fp32 elsewhere.

bf16 is the speed lever on CPUs with AVX-512 bf16 or AMX (~3x faster matmuls than fp32). On
CPUs without it (AVX2 only) oneDNN emulates bf16: a 1024 x 576 @ 576 x 1152 matmul ran at
1.6 GFLOP/s in bf16 against 57.8 in fp32 on such a machine. So every `bf16=True` in the
library means "bf16 if native": the same atlas builds on both, fast on each. CUDA GPUs from
Ampere on run bf16 natively; MPS runs fp32 here (its bf16 autocast was not measured).
"""

from __future__ import annotations

from functools import cache

import torch

DEVICES = ("auto", "cpu", "cuda", "mps")
"""What `--device` accepts; `auto` is CUDA, else MPS, else the CPU."""


def resolve_device(name: str | torch.device = "cpu") -> torch.device:
    """The torch device for a `--device` value; a clear error when it is not here."""
    if isinstance(name, torch.device):
        return name
    kind = str(name).strip().lower()
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    if kind.split(":")[0] not in DEVICES[1:]:
        raise ValueError(f"unknown device {name!r}; use one of {', '.join(DEVICES)}")
    if kind.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but this machine has no CUDA GPU that torch "
                         "can use; use --device cpu (or auto)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' asked for, but MPS is not available here; use cpu")
    return torch.device(kind)


@cache
def bf16_native() -> bool:
    """Whether this CPU has native bf16 matmuls (oneDNN's own check)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def bf16_native_on(device: torch.device | str = "cpu") -> bool:
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_bf16_supported()
    return kind == "cpu" and bf16_native()


def use_bf16(requested: bool, device: torch.device | str = "cpu") -> bool:
    """bf16 only when asked for and native on `device`."""
    return requested and bf16_native_on(device)


def matmul_dtype(requested: bool, device: torch.device | str = "cpu") -> torch.dtype:
    return torch.bfloat16 if use_bf16(requested, device) else torch.float32


def autocast(requested: bool, device: torch.device | str = "cpu") -> torch.autocast:
    """Autocast to bf16 on `device` when asked for and native there; a no-op otherwise."""
    kind = torch.device(device).type
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=use_bf16(requested, kind))
