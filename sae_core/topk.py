"""Exact top-k of each row: the one rule that selects an SAE's strongest latents per token,
in the TopK step (train/topk_grad.py), the views' encoder (sae.Sae.encode_topk), steering
(steer/edits.feature_acts) and the live view (explore/live.py, by write).

`topk_sorted(pre_NS, k)` -> (vals_NK, idx_NK): the k largest entries of each row, listed
in ascending index order (what `pair_dots`' CSR pattern and `embedding_bag` want, so no
separate sort and gather); `topk_best_first` lists the same entries best first. Ties at
the k-th value go to the lowest indices, so the chosen set is that of a stable descending
sort: deterministic, and the same on every machine.

On the CPU a numba kernel does it in one read of each row (when numba is installed; else,
and on other devices, `torch.topk` then a sort, whose tie rule is torch's). Per row: bf16
or fp32 bits become monotone integer keys; the maxima of 16-wide chunks give a lower
bound on the k-th largest (the k-th largest chunk maximum: k distinct entries reach it),
so only the few chunks whose maximum reaches it are read again for candidates; a
bisection on those finds the k-th key, and a last pass in index order takes everything
above it and the earliest ties. Rows must be NaN-free.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import cache
from itertools import pairwise

import numpy as np
import torch
from torch import Tensor

from .numba_kernels import numba, topk_rows


def topk_sorted(pre_NS: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(vals, idx), each (n, k): the k largest entries of each row, idx ascending; vals in
    pre's dtype. CPU with numba: ties to the lowest index (module docstring)."""
    if k < 1 or k > pre_NS.shape[-1]:
        raise ValueError(f"k must be in 1..{pre_NS.shape[-1]}, got {k}")
    if _kernel_applies(pre_NS):
        return _numba_topk(pre_NS, k)
    vals, idx = pre_NS.topk(k, dim=-1, sorted=False)
    idx, order = idx.sort(dim=-1)
    return vals.gather(-1, order), idx


def topk_best_first(x_NS: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(vals, idx), each (n, k): the entries `topk_sorted` chooses (the same tie rule),
    listed best first; equal values in ascending index order."""
    vals, idx = topk_sorted(x_NS, k)
    vals, order = vals.sort(dim=-1, descending=True, stable=True)
    return vals, idx.gather(-1, order)


def _kernel_applies(pre_NS: Tensor) -> bool:
    return (numba is not None and pre_NS.device.type == "cpu" and pre_NS.dim() == 2
            and pre_NS.dtype in (torch.bfloat16, torch.float32))


def _numba_topk(pre_NS: Tensor, k: int) -> tuple[Tensor, Tensor]:
    n = pre_NS.shape[0]
    bits_dtype = torch.int16 if pre_NS.dtype == torch.bfloat16 else torch.int32
    bits = pre_NS.detach().contiguous().view(bits_dtype).numpy()
    out_bits = torch.empty(n, k, dtype=bits_dtype)  # cpu: the kernel's output
    idx = torch.empty(n, k, dtype=torch.long)  # cpu: the kernel's output
    in_row_blocks(topk_rows, n, bits, k, out_bits.numpy(), idx.numpy())
    return out_bits.view(pre_NS.dtype), idx


def in_row_blocks(kernel, n: int, *args) -> None:
    """kernel(*args, r0, r1) over rows [0, n), split across torch's thread count (the
    kernels release the GIL)."""
    n_threads = max(min(torch.get_num_threads(), n // 64), 1)
    if n_threads == 1:
        kernel(*args, 0, n)
        return
    bounds = np.linspace(0, n, n_threads + 1).astype(np.int64).tolist()
    jobs = [_pool(n_threads).submit(kernel, *args, a, b) for a, b in pairwise(bounds)]
    for job in jobs:
        job.result()


@cache
def _pool(n_threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(n_threads, thread_name_prefix="topk_sorted")
