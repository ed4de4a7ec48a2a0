"""Training on several processes with torch.distributed (`torchrun --nproc_per_node N`).

Two ways to share the work, as large SAE suites are trained:
- `data`: every rank holds every SAE; each LM batch's windows are dealt out across ranks
  (window i to rank i mod N), each rank runs the LM on its share, and every SAE step sums
  the ranks' gradients (all-reduce) before the same Adam step everywhere, so the SAEs stay
  identical. Where a step needs a number of the whole batch (whole.py: the loss's
  normalisers, its FVU, the latents that fired) it asks, and `Ranks.run` all-reduces the
  ranks' parts, so a step is the one-process step on the union of the ranks' rows.
- `layers`: each rank trains its own hookpoints (every N-th) on its own forward passes over
  all the data; nothing is exchanged until rank 0 gathers the SAEs to write them.

Rank 0 alone writes checkpoints and the atlas. Tensors travel between ranks as tensors with
a JSON header (`send_tensors`), never pickled (torch's *_object collectives unpickle).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from ..config import Parallel, TrainConfig
from ..metrics import total_variance
from .batch_topk import BATCH_ARCHS
from .whole import AnyOf, Count, Request, Step, Sum, SumGrads, Variance, alone, drive

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    mode: Parallel = "data"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def data_parallel(self) -> bool:
        return self.world > 1 and self.mode == "data"

    @property
    def rows_share(self) -> int:
        """How many ranks share each LM batch's rows."""
        return self.world if self.data_parallel else 1

    def own_seed(self, seed: int) -> int:
        """A shuffle buffer's seed: data parallel, each rank its own order of its rows."""
        return seed + 7919 * self.rank if self.data_parallel else seed

    def describe(self) -> dict:
        """What a checkpoint records of the split (resume needs the same one)."""
        return {"parallel": f"{self.mode} x{self.world}"} if self.world > 1 else {}

    def check_training(self, cfg: TrainConfig, hookpoints: list[str], per_batch: int) -> None:
        """A clear refusal of what these ranks cannot train: more ranks than layers to
        split, or data parallel with what needs the whole batch on one rank."""
        if not self.share(hookpoints):
            raise ValueError(f"{self.world} ranks share {len(hookpoints)} hookpoints by "
                             "layers: start at most as many ranks as hookpoints")
        if self.data_parallel and (cfg.architecture in BATCH_ARCHS or cfg.ghost_grads
                                   or cfg.resample_every):
            raise ValueError("data-parallel training supports topk and relu SAEs without "
                             f"ghost grads or resampling (got architecture "
                             f"{cfg.architecture!r}, ghost_grads {cfg.ghost_grads}, "
                             f"resample_every {cfg.resample_every}): use --parallel layers "
                             "or one process")
        if self.data_parallel and per_batch < self.world:
            raise ValueError(f"an LM batch of {per_batch} windows cannot be shared by "
                             f"{self.world} ranks: raise --lm-batch-tokens")

    def share(self, hookpoints: list[str]) -> list[str]:
        """The hookpoints this rank trains."""
        if self.world > 1 and self.mode == "layers":
            return hookpoints[self.rank::self.world]
        return list(hookpoints)

    def windows(self, batch_WL: Tensor) -> Tensor:
        """This rank's windows of one LM batch."""
        return batch_WL[self.rank::self.world] if self.data_parallel else batch_WL

    def sum_(self, t: Tensor) -> Tensor:
        """In place: the sum over data-parallel ranks (this rank's value alone otherwise)."""
        if self.data_parallel:
            dist.all_reduce(t)
        return t

    def total_variance(self, x_ND: Tensor) -> Tensor:
        """sum ||x - mean||^2 over the rows of every data-parallel rank (0-dim, x's dtype)."""
        if not self.data_parallel:
            return total_variance(x_ND)
        x = x_ND.double()
        stats = self.sum_(torch.cat([x.sum(0), x.pow(2).sum().view(1),
                                     x.new_tensor([len(x)])]))
        sum_D, sum_sq, n = stats[:-2], stats[-2], stats[-1].clamp_min(1)
        return (sum_sq - sum_D.pow(2).sum() / n).to(x_ND.dtype)

    def count(self, n: int, device: torch.device) -> int:
        """`n` summed over data-parallel ranks."""
        if not self.data_parallel:
            return n
        return int(self.sum_(torch.tensor([n], dtype=torch.long, device=device)))

    def together(self, out: Tensor | None, like: Tensor) -> Tensor | None:
        """Ranks step together: when any rank's shuffle buffer gives a batch (`out`), one
        still filling joins with no rows (`like[:0]`)."""
        if not self.data_parallel:
            return out
        if self.count(int(out is not None), like.device) and out is None:
            return like[:0]
        return out

    def run(self, step: Step[T]) -> T:
        """Run a training step (whole.py), answering its requests over the rows of every
        data-parallel rank; otherwise from this process's rows, with no collective."""
        return drive(step, self._answer) if self.data_parallel else alone(step)

    def _answer(self, request: Request) -> Any:
        match request:
            case Sum(t):
                return self.sum_(t)
            case Count(n, device):
                return self.count(n, device)
            case AnyOf(mask):
                return self.sum_(mask.int()) > 0
            case Variance(x):
                return self.total_variance(x)
            case SumGrads(params):
                return self._sum_grads(params)
        raise TypeError(f"not a whole-batch request: {request!r}")

    def _sum_grads(self, params: tuple[Tensor, ...]) -> None:
        """One all-reduce of every gradient (a flat buffer, not one call each)."""
        grads = [p.grad for p in params]
        flat = self.sum_(torch.cat([g.reshape(-1) for g in grads]))
        for g, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
            g.copy_(part.view_as(g))

    def most(self, n: int, device: torch.device) -> int:
        """The largest `n` over data-parallel ranks."""
        t = torch.tensor([n], dtype=torch.long, device=device)
        if self.data_parallel:
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t)

    def agree(self, ok: bool) -> bool:
        """Whether `ok` holds on every rank (a barrier too): ranks stop together."""
        if self.world == 1:
            return ok
        flag = torch.tensor([int(ok)], device=_wire_device())
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


SOLO = Ranks()


def from_environment(mode: Parallel, device: torch.device) -> Ranks:
    """The ranks torchrun started (WORLD_SIZE, RANK in the environment), joined into one
    process group: NCCL on CUDA, gloo on the CPU. One process: SOLO."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return SOLO
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Ranks(rank=dist.get_rank(), world=dist.get_world_size(), mode=mode)


def rank_device(device: torch.device) -> torch.device:
    """Each rank its own GPU (LOCAL_RANK); CPU ranks share the CPU."""
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def _wire_device() -> torch.device:
    """What the backend moves: CUDA tensors for NCCL, CPU tensors for gloo."""
    return torch.device("cuda", torch.cuda.current_device()) \
        if dist.get_backend() == "nccl" else torch.device("cpu")


def send_tensors(tensors: dict[str, Tensor], meta: dict, dst: int = 0) -> None:
    """Send named tensors and a JSON-able dict to rank `dst` (see `recv_tensors`)."""
    wire = _wire_device()
    header = json.dumps({"meta": meta, "tensors": [
        [name, str(t.dtype).removeprefix("torch."), list(t.shape)] for name, t in tensors.items()]})
    raw = torch.tensor(list(header.encode()), dtype=torch.uint8, device=wire)
    dist.send(torch.tensor([len(raw)], dtype=torch.long, device=wire), dst)
    dist.send(raw, dst)
    for t in tensors.values():
        dist.send(t.detach().contiguous().to(wire), dst)


def recv_tensors(src: int) -> tuple[dict[str, Tensor], dict]:
    """(named tensors on the CPU, meta) sent by rank `src` with `send_tensors`."""
    wire = _wire_device()
    size = torch.zeros(1, dtype=torch.long, device=wire)
    dist.recv(size, src)
    raw = torch.zeros(int(size), dtype=torch.uint8, device=wire)
    dist.recv(raw, src)
    header = json.loads(bytes(raw.cpu().tolist()).decode())
    out = {}
    for name, dtype, shape in header["tensors"]:
        t = torch.zeros(shape, dtype=getattr(torch, dtype), device=wire)
        dist.recv(t, src)
        out[name] = t.cpu()
    return out, header["meta"]
