"""The TopK step's sparse kernels: exact top-k of each row with indices ascending, and the
(token, latent) pairs grouped by latent.

`topk_sorted(pre_NS, k)` -> (vals_NK, idx_NK): the k largest entries of each row, listed
in ascending index order (what `pair_dots`' CSR pattern and `embedding_bag` want, so no
separate sort and gather). Ties at the k-th value go to the lowest indices, so the chosen
set is that of a stable descending sort: deterministic, and the same on every machine.

On the CPU a numba kernel does it in one read of each row (when numba is installed; else,
and on other devices, `torch.topk` then a sort, whose tie rule is torch's). Per row: bf16
or fp32 bits become monotone integer keys; the maxima of 16-wide chunks give a lower
bound on the k-th largest (the k-th largest chunk maximum: k distinct entries reach it),
so only the few chunks whose maximum reaches it are read again for candidates; a
bisection on those finds the k-th key, and a last pass in index order takes everything
above it and the earliest ties. Rows must be NaN-free.

`latent_order(idx_NK, n_latents)`: the pairs' order by latent (stable), a counting sort on
the CPU (0.5 vs 6 ms for torch's argsort of 131072 pairs, 1 thread).
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from itertools import pairwise

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# pair_dots builds a CSR pattern per step; torch warns that CSR is "beta" on first use.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")

try:
    import numba
except ImportError:  # the torch path still works; requirements.txt pins numba
    numba = None

CHUNK = 16
"""Width of the chunks whose maxima bound the k-th largest (one AVX-512 float vector)."""


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


def _kernel_applies(pre_NS: Tensor) -> bool:
    return (numba is not None and pre_NS.device.type == "cpu" and pre_NS.dim() == 2
            and pre_NS.dtype in (torch.bfloat16, torch.float32))


def _numba_topk(pre_NS: Tensor, k: int) -> tuple[Tensor, Tensor]:
    n = pre_NS.shape[0]
    bits_dtype = torch.int16 if pre_NS.dtype == torch.bfloat16 else torch.int32
    bits = pre_NS.detach().contiguous().view(bits_dtype).numpy()
    out_bits = torch.empty(n, k, dtype=bits_dtype)  # cpu: the kernel's output
    idx = torch.empty(n, k, dtype=torch.long)  # cpu: the kernel's output
    _in_row_blocks(_topk_rows, n, bits, k, out_bits.numpy(), idx.numpy())
    return out_bits.view(pre_NS.dtype), idx


def _in_row_blocks(kernel, n: int, *args) -> None:
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


def decode_and_dots(idx_NK: Tensor, vals_NK: Tensor, W_dec: Tensor, xc_ND: Tensor,
                    coeff: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(err, grad_out, grad_vals) of a sparse code: err = code @ W_dec - xc, grad_out =
    coeff * err, grad_vals[n, j] = grad_out[n] . W_dec[idx[n, j]] where vals[n, j] > 0, else
    0. On the CPU one pass per token reads its k decoder rows once for both (embedding_bag
    then a sampled matmul read them twice)."""
    if numba is None or idx_NK.device.type != "cpu":
        err = F.embedding_bag(idx_NK, W_dec, per_sample_weights=vals_NK, mode="sum").sub_(xc_ND)
        grad_out = err * coeff
        return err, grad_out, pair_dots(grad_out, W_dec, idx_NK).mul_(vals_NK > 0)
    err, grad_out = torch.empty_like(xc_ND), torch.empty_like(xc_ND)
    grad_vals = torch.empty_like(vals_NK)
    _in_row_blocks(_decode_dots, len(idx_NK), idx_NK.numpy(), vals_NK.numpy(),
                   W_dec.detach().numpy(), xc_ND.numpy(), float(coeff), err.numpy(),
                   grad_out.numpy(), grad_vals.numpy())
    return err, grad_out, grad_vals


def pair_dots(rows_ND: Tensor, table_SD: Tensor, idx_NK: Tensor) -> Tensor:
    """out[n, j] = rows[n] . table[idx[n, j]], for idx sorted along each row.

    A sampled matmul (SDDMM) does B*k*d work; the dense `rows @ table.T` then gather did
    B*d_sae*d (5.8 vs 74 ms for 4096 x 576 x 4608 with k 32, 2 cores), and it is exact fp32.
    """
    n, k = idx_NK.shape
    pattern = torch.sparse_csr_tensor(
        torch.arange(0, n * k + 1, k, device=idx_NK.device), idx_NK.reshape(-1),
        torch.zeros(n * k, device=rows_ND.device),
        size=(n, table_SD.shape[0]), check_invariants=False,
    )
    return torch.sparse.sampled_addmm(pattern, rows_ND, table_SD.T, beta=0.0).values().view(n, k)


def latent_order(idx_NK: Tensor, n_latents: int) -> tuple[Tensor, Tensor]:
    """(order, counts): the flat pair positions sorted by latent, stably (within a latent by
    token: a deterministic summation order), and each latent's pair count."""
    flat = idx_NK.reshape(-1)
    if numba is None or flat.device.type != "cpu":
        return flat.argsort(stable=True), torch.bincount(flat, minlength=n_latents)
    order = torch.empty_like(flat)
    counts = torch.zeros(n_latents, dtype=torch.long)  # cpu: the kernel's output
    _counting_sort(flat.numpy(), order.numpy(), counts.numpy())
    return order, counts


@cache
def _pool(n_threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(n_threads, thread_name_prefix="topk_sorted")


def _njit(fn=None, *, fastmath=False):
    if fn is None:
        return lambda f: _njit(f, fastmath=fastmath)
    if numba is None:
        return fn
    opts = dict(nogil=True, boundscheck=False, error_model="numpy", fastmath=fastmath)
    try:
        return numba.njit(cache=True, **opts)(fn)
    except RuntimeError:  # no writable cache location: compile in memory only
        return numba.njit(**opts)(fn)


@_njit
def _keys_and_maxima(bits_S, keys_S, max_C):
    """Monotone int32 keys of bf16 (int16) or fp32 (int32) bits, key order = float order
    with -0.0 == +0.0; and max_C[c], the largest key of chunk c = entries c, c + n_c, ...,
    c + 15 n_c (strided, so the maxima are vertical vector maxima; the < 16 entries past
    16 n_c are in no chunk)."""
    shift = bits_S.itemsize * 8 - 1
    mag = (1 << shift) - 1
    n_c = max_C.shape[0]
    max_C[:] = -(1 << 31)
    for t in range(CHUNK):
        for c in range(n_c):
            b = np.int32(bits_S[t * n_c + c])
            key = np.int32((b ^ ((b >> shift) & mag)) + (b == -(1 << shift)))
            keys_S[t * n_c + c] = key
            max_C[c] = max(max_C[c], key)
    for j in range(CHUNK * n_c, bits_S.shape[0]):
        b = np.int32(bits_S[j])
        keys_S[j] = (b ^ ((b >> shift) & mag)) + (b == -(1 << shift))


@_njit
def _count_at_least(a, m, t):
    n = 0
    for i in range(m):
        n += a[i] >= t
    return n


@_njit
def _kth_bound(a, m, k, max_iters):
    """The largest t with at least k of a[:m] >= t: the k-th largest of a[:m] when the
    bisection ends, a lower bound on it when max_iters stops it first."""
    lo, hi = np.int64(a[:m].min()), np.int64(a[:m].max()) + 1  # count(>= lo) >= k > count(>= hi)
    for _ in range(max_iters):
        if hi - lo <= 1:
            break
        mid = (lo + hi) >> 1
        if _count_at_least(a, m, mid) >= k:
            lo = mid
        else:
            hi = mid
    return lo


@_njit
def _candidates(keys_S, max_C, bound, cand_M, cand_idx_M, chunks):
    """Entries >= bound into cand (keys) and cand_idx, in ascending index order; returns
    how many. Only chunks whose maximum reaches the bound are read."""
    n_c, s = max_C.shape[0], keys_S.shape[0]
    n_sel = 0
    for c in range(n_c):
        chunks[n_sel] = c
        n_sel += max_C[c] >= bound
    m = 0
    for t in range(CHUNK):  # j = t * n_c + c grows with (t, c): index order
        for i in range(n_sel):
            j = t * n_c + chunks[i]
            if keys_S[j] >= bound:  # few are: a predictable branch beats branch-free stores
                cand_M[m], cand_idx_M[m] = keys_S[j], j
                m += 1
    for j in range(CHUNK * n_c, s):
        if keys_S[j] >= bound:
            cand_M[m], cand_idx_M[m] = keys_S[j], j
            m += 1
    return m


@_njit
def _topk_rows(bits_NS, k, out_bits_NK, out_idx_NK, r0, r1):
    s = bits_NS.shape[1]
    n_c = s // CHUNK
    keys, chunk_max = np.empty(s, np.int32), np.empty(n_c, np.int32)
    cand, cand_idx = np.empty(s, np.int32), np.empty(s, np.int64)
    chunks = np.empty(n_c, np.int64)
    for r in range(r0, r1):
        _keys_and_maxima(bits_NS[r], keys, chunk_max)
        bound = np.int32(-(1 << 31))  # when k > n_c, every entry is a candidate
        if k <= n_c:
            bound = _kth_bound(chunk_max, n_c, k, 16)
        m = _candidates(keys, chunk_max, bound, cand, cand_idx, chunks)
        kth, ties = bound, k  # ties: how many entries equal to kth to take
        if m > k:
            kth = _kth_bound(cand, m, k, 64)
            for t in range(m):
                ties -= cand[t] > kth
        o = 0
        for t in range(m):
            v = cand[t]
            if v > kth or (v == kth and ties > 0):
                ties -= v == kth
                out_idx_NK[r, o] = cand_idx[t]
                out_bits_NK[r, o] = bits_NS[r, cand_idx[t]]
                o += 1


@_njit
def _counting_sort(keys_M, order_M, counts_L):
    for i in range(keys_M.shape[0]):
        counts_L[keys_M[i]] += 1
    next_L = np.empty_like(counts_L)
    total = 0
    for c in range(counts_L.shape[0]):
        next_L[c] = total
        total += counts_L[c]
    for i in range(keys_M.shape[0]):
        order_M[next_L[keys_M[i]]] = i
        next_L[keys_M[i]] += 1


@_njit(fastmath={"reassoc", "contract"})  # vectorised dot products; no NaN assumptions
def _decode_dots(idx_NK, vals_NK, W_SD, xc_ND, coeff, err_ND, grad_out_ND, grad_vals_NK, r0, r1):
    k, d = idx_NK.shape[1], W_SD.shape[1]
    for n in range(r0, r1):
        err = err_ND[n]
        for t in range(d):
            err[t] = -xc_ND[n, t]
        for j in range(k):
            v = vals_NK[n, j]
            if v != 0:
                row = W_SD[idx_NK[n, j]]
                for t in range(d):
                    err[t] += v * row[t]
        g = grad_out_ND[n]
        for t in range(d):
            g[t] = err[t] * coeff
        for j in range(k):
            dot = np.float32(0)
            if vals_NK[n, j] > 0:
                row = W_SD[idx_NK[n, j]]
                for t in range(d):
                    dot += g[t] * row[t]
            grad_vals_NK[n, j] = dot
