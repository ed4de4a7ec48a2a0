"""The numba kernels behind topk.py and train/sparse_kernels.py (which document what each
computes). Each takes numpy views of torch tensors, releases the GIL and handles rows
[r0, r1) or all."""

from __future__ import annotations

import numpy as np

try:
    import numba
except ImportError:  # the callers take their torch paths; requirements.txt pins numba
    numba = None

CHUNK = 16
"""Width of the chunks whose maxima bound the k-th largest (one AVX-512 float vector)."""


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
def topk_rows(bits_NS, k, out_bits_NK, out_idx_NK, r0, r1):
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
def counting_sort(keys_M, order_M, counts_L):
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
def decode_dots(idx_NK, vals_NK, W_SD, xc_ND, coeff, err_ND, grad_out_ND, grad_vals_NK, r0, r1):
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

