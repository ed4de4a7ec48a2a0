"""What every converter shares: where an SAE came from, its hook -> our hookpoint, tensor
checks, and an `Sae` that holds the loaded tensors themselves.

Hook names (TransformerLens names of SAELens, module names of sparsify) map onto our
hookpoints in sae_core/saelens.py, the one map both ways; hub/hook_names.py adds the suites'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..config import SaeConfig
from ..sae import Sae
from ..saelens import is_hook_name, sae_hookpoint
from .fetch import HubError


@dataclass(frozen=True)
class Where:
    """One SAE's place on the Hub and what the caller knows about it."""

    repo_id: str
    path: str
    """Its folder in the repo, or its file for single-file layouts (`layer3.sae.pt`)."""
    hook: str = ""
    """What it reads, when the caller knows (a release's SAE id or hook); "" otherwise."""
    trained_for: str = ""
    """Its model, when the caller knows (a release's model); "" otherwise."""

    @property
    def what(self) -> str:
        return f"{self.repo_id}/{self.path}" if self.path else self.repo_id

    @property
    def given_hook(self) -> str:
        """The caller's hook when it is a hook name (release SAE ids often are not)."""
        return self.hook if is_hook_name(self.hook) else ""


class Converted(NamedTuple):
    sae: Sae
    normalize: str
    """"none" or "expected_average_only_in" (inputs scaled by a constant)."""


def hookpoint_of(hook: str) -> str:
    """Our hookpoint for an SAE's TransformerLens hook name or module name
    (saelens.sae_hookpoint); HubError with the reason, also for a transcoder's input hook
    (transcoders.py reads those)."""
    try:
        return sae_hookpoint(hook)
    except ValueError as err:
        raise HubError(str(err)) from err


def take(tensors: dict[str, Tensor], name: str, shape: tuple[int, ...], what: str) -> Tensor:
    """Tensor `name`, checked for its shape; as stored (the converter casts once)."""
    if name not in tensors:
        raise HubError(f"{what}: tensor {name!r} is missing (has {sorted(tensors)})")
    if tuple(tensors[name].shape) != shape:
        raise HubError(f"{what}: tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                       f"expected {shape}")
    return tensors[name]


def shape_of(tensors: dict[str, Tensor], name: str, ndim: int, what: str) -> tuple[int, ...]:
    """The shape of tensor `name`, which sizes the SAE (sizes come from the files)."""
    if name not in tensors:
        raise HubError(f"{what}: tensor {name!r} is missing (has {sorted(tensors)})")
    shape = tuple(tensors[name].shape)
    if len(shape) != ndim:
        raise HubError(f"{what}: tensor {name!r} has shape {shape}, expected {ndim} dimensions")
    return shape


def rows(t: Tensor) -> Tensor:
    """float32, row-major: `t` itself when it already is, else one copy (a transposed
    bf16 matrix is cast and laid out in the same pass)."""
    return t.to(dtype=torch.float32, memory_format=torch.contiguous_format)


def build_sae(cfg: SaeConfig, weights: dict[str, Tensor], what: str) -> Sae:
    """An `Sae` whose parameters are `weights` themselves, float32 (cast only if stored
    otherwise). Made on the meta device first: zeros then a copy would hold the weights twice.
    `W_enc_SD` may be a transposed view (the encoder is read as `W_enc`, its transpose);
    `W_dec` must be row-major (saving and `embedding_bag` need it)."""
    sae = Sae(cfg, device="meta")
    expected = {name: tuple(p.shape) for name, p in sae.named_parameters()}
    got = {name: tuple(t.shape) for name, t in weights.items()}
    if got != expected:
        raise HubError(f"{what}: tensors {got} do not match the SAE's {expected}")
    for name, value in weights.items():
        value = rows(value) if name == "W_dec" else value.float()
        setattr(sae, name, nn.Parameter(value))
    return sae


def fold_input_scale(sae: Sae, scale: float) -> None:
    """Make an SAE trained on inputs `x * scale` read raw `x` (as SAELens folds it)."""
    with torch.no_grad():
        sae.W_enc_SD.mul_(scale)
        sae.W_dec.div_(scale)
        sae.b_dec.div_(scale)
    sae.metadata["norm_scaling_factor"] = float(scale)
