"""Files in the public suites' exact layouts (file names, tensor names, config keys as on
the Hub), with planted random weights, and plain numpy versions of each suite's math."""

import io

import numpy as np
import torch
from safetensors.torch import save as st_bytes

from tests.hub.repos import D, S, put_repo

__all__ = ["D", "S", "jump", "npz_bytes", "planted", "pt_bytes", "put_repo", "st_bytes",
           "to_torch", "topk", "x_ND"]


def npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def pt_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def planted(seed: int, shapes: dict[str, tuple[int, ...]], positive=("threshold",)) -> dict:
    """float32 numpy arrays of these shapes; `positive` ones in (0.2, 1.2) (thresholds)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        a = rng.uniform(0.2, 1.2, shape) if name in positive else rng.normal(0, 0.5, shape)
        out[name] = a.astype(np.float32)
    return out


def x_ND(seed: int = 7, n: int = 40, d: int = D) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1.5, (n, d)).astype(np.float32)


def jump(pre: np.ndarray, threshold) -> np.ndarray:
    """JumpReLU: pre where pre > threshold (the threshold is positive), else 0."""
    return np.where(pre > threshold, pre, 0.0)


def topk(pre: np.ndarray, k: int) -> np.ndarray:
    """The k largest of each row, ReLU'd; zeros elsewhere."""
    out = np.zeros_like(pre)
    idx = np.argsort(-pre, axis=1)[:, :k]
    rows = np.arange(pre.shape[0])[:, None]
    out[rows, idx] = np.maximum(pre[rows, idx], 0)
    return out


def to_torch(arrays: dict) -> dict:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
