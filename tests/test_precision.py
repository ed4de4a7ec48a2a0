"""bf16 only where the CPU runs it natively."""

from pathlib import Path

import torch

from sae_core import precision
from sae_core.hooks import run_captured
from tests.conftest import tiny_lm


def test_bf16_follows_the_cpu(monkeypatch):
    ids = torch.randint(3, 16, (2, 8))
    lm = tiny_lm()
    for native, dtype in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(precision, "bf16_native", lambda native=native: native)
        assert precision.use_bf16(True) is native and precision.use_bf16(False) is False
        assert precision.matmul_dtype(True) == dtype
        plain = run_captured(lm, ids, ["layers.1"], bf16=False)["layers.1"]
        mixed = run_captured(lm, ids, ["layers.1"], bf16=True)["layers.1"]
        assert torch.equal(plain, mixed) is not native  # fp32 forward unless bf16 is native
        with precision.autocast(True):
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == dtype


def test_native_check_matches_the_cpu_flags():
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.exists() else ""
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        assert precision.bf16_native()
    elif flags and "avx512" not in flags:
        assert not precision.bf16_native()
