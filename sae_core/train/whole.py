"""The whole-batch numbers a training step needs, and how one process answers them.

A step's loss is normalised by numbers of the whole batch (its total variance, its row
count), and its FVU, fired latents and gradients are the whole batch's. Under data
parallelism the batch's rows are spread over ranks, so the step is written as a generator:
where it needs such a number it yields a request (`Sum`, `Count`, `AnyOf`, `Variance`,
`SumGrads`) with its own rows' part and is sent back the whole batch's value; it returns its
result. `alone` answers from one process's rows, with no collective and no copy; ranks.py
(`Ranks.run`) answers by summing over the data-parallel ranks. The step stays the math of
one batch, and the ranks live in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

from ..metrics import total_variance


@dataclass(frozen=True)
class Sum:
    """-> t summed over the whole batch (elementwise over ranks; may be summed in place)."""
    t: Tensor


@dataclass(frozen=True)
class Count:
    """-> n rows summed over the whole batch, an int."""
    n: int
    device: torch.device


@dataclass(frozen=True)
class AnyOf:
    """-> the bool `mask` or-ed over the whole batch (which latents fired on any rank)."""
    mask: Tensor


@dataclass(frozen=True)
class Variance:
    """-> sum ||x - mean||^2 over the whole batch's rows, 0-dim in x's dtype. `one_pass`:
    as sum ||x||^2 - n ||mean||^2 (`sq_norm`: sum ||x||^2 when known), one read of x, for
    the step's near-centred rows; else as metrics.total_variance."""
    x: Tensor
    one_pass: bool = True
    sq_norm: Tensor | None = None


@dataclass(frozen=True)
class SumGrads:
    """-> None; every parameter's .grad becomes the whole batch's (the sum over ranks)."""
    params: tuple[Tensor, ...]


Request = Sum | Count | AnyOf | Variance | SumGrads
T = TypeVar("T")
Step = Generator[Request, Any, T]
"""A step: yields requests, is sent their whole-batch values, returns its result."""


def sq_norm(x: Tensor) -> Tensor:
    """sum of x**2 in one pass (no squared temporary)."""
    flat = x.reshape(-1)
    return torch.dot(flat, flat)


def one_pass_variance(x_ND: Tensor, sq: Tensor | None = None) -> Tensor:
    """sum ||x - mean||^2 as sum ||x||^2 - n ||mean||^2: one read of x where
    (x - mean).pow(2).sum() made three and two temporaries. For near-centred rows (x - b_dec,
    the error), so the subtraction cancels little."""
    sq = sq_norm(x_ND) if sq is None else sq
    return sq - x_ND.sum(0).pow(2).sum() / max(len(x_ND), 1)


def answer_alone(request: Request) -> Any:
    """The whole batch is this process's rows."""
    match request:
        case Sum(t):
            return t
        case Count(n):
            return n
        case AnyOf(mask):
            return mask
        case Variance(x, one_pass, sq):
            return one_pass_variance(x, sq) if one_pass else total_variance(x)
        case SumGrads():
            return None
    raise TypeError(f"not a whole-batch request: {request!r}")


def drive(step: Step[T], answer: Callable[[Request], Any]) -> T:
    """Run `step` to its end, sending back `answer(request)` for each request it yields."""
    try:
        request = next(step)
        while True:
            request = step.send(answer(request))
    except StopIteration as done:
        return done.value


def alone(step: Step[T]) -> T:
    """Run `step` on one process's rows: no collectives."""
    return drive(step, answer_alone)
