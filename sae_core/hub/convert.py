"""What every converter shares: where an SAE came from, its hook -> our hookpoint, tensor
checks, and an `Sae` that holds the loaded tensors themselves.

Hook names map onto our hookpoints, which name module *outputs*:
  SAELens  blocks.N.hook_resid_post -> layers.N, blocks.N.hook_resid_pre -> layers.{N-1},
           blocks.N.hook_mlp_out -> layers.N.mlp, blocks.N.hook_attn_out -> layers.N.attn
  sparsify layers.N -> layers.N, layers.N.mlp -> layers.N.mlp, layers.N.self_attn ->
           layers.N.attn (module names, like ours)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..config import SaeConfig
from ..sae import Sae
from .fetch import HubError

TL_HOOK_RE = re.compile(
    r"^blocks\.(\d+)\.(hook_resid_post|hook_resid_pre|hook_mlp_out|hook_attn_out)$")
MODULE_RE = re.compile(r"^(?:model\.|transformer\.|gpt_neox\.)?(?:layers|h)\.(\d+)"
                       r"(?:\.(mlp|self_attn|attn|attention))?$")
OTHER_HOOK_RE = re.compile(r"^(?:hook_embed|blocks\.\d+\.attn\.hook_z)$")
"""Hooks the suites read that have no hookpoint here (named, so the error says so)."""
SUPPORTED_HOOKS = ("blocks.N.hook_resid_post, blocks.N.hook_resid_pre (N >= 1), "
                   "blocks.N.hook_mlp_out, blocks.N.hook_attn_out (SAELens); layers.N, "
                   "layers.N.mlp, layers.N.self_attn (sparsify)")
TL_SUFFIX = {"hook_resid_post": "", "hook_mlp_out": ".mlp", "hook_attn_out": ".attn"}


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
        known = TL_HOOK_RE, MODULE_RE, OTHER_HOOK_RE
        return self.hook if any(r.match(self.hook) for r in known) else ""


class Converted(NamedTuple):
    sae: Sae
    normalize: str
    """"none" or "expected_average_only_in" (inputs scaled by a constant)."""


def hookpoint_of(hook: str) -> str:
    """Our hookpoint for a TransformerLens hook name or a module name."""
    if m := TL_HOOK_RE.match(hook):
        layer, kind = int(m.group(1)), m.group(2)
        if kind == "hook_resid_pre":
            if layer == 0:
                raise HubError(f"{hook} reads the token embeddings, which have no hookpoint here "
                               f"(supported: {SUPPORTED_HOOKS})")
            return f"layers.{layer - 1}"
        return f"layers.{layer}" + TL_SUFFIX[kind]
    if m := MODULE_RE.match(hook):
        sub = m.group(2)
        return f"layers.{m.group(1)}" + ("" if not sub else ".mlp" if sub == "mlp" else ".attn")
    if hook == "hook_embed":
        raise HubError(f"{hook} reads the token embeddings, which have no hookpoint here "
                       f"(supported: {SUPPORTED_HOOKS})")
    raise HubError(f"hook {hook!r} has no hookpoint here (supported: {SUPPORTED_HOOKS})")


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
