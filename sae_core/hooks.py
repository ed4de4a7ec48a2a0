"""Capture activations at any hookpoints in one forward pass; hooks always removed.

Hooks act only in the thread that installed them: the app serves many visitors from one
model, and one visitor's capture or steering must never touch another's forward pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from threading import Lock, get_ident

import torch

from .activations import INPUT_SITES, parse_hookpoint
from .lm import LM
from .precision import autocast
from .sublayers import sublayer_output


class _StopForward(Exception):
    """Raised after the last needed block so the rest of the model never runs."""


def output_tensor(output: object) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _first_arg(args: tuple, kwargs: dict) -> torch.Tensor:
    """A module's input tensor: its first positional argument, else its first keyword one."""
    return args[0] if args else next(iter(kwargs.values()))


def _on_site(lm: LM, hookpoint: str, fn) -> torch.utils.hooks.RemovableHandle:
    """Call `fn(tensor)` with what `hookpoint` reads in every forward: a module's output, or
    for an input site (`layers.N.mlp_in`, `.attn_z`, `.resid_mid`; sublayers.py) the input of
    the module lm.module_for names, through a forward pre-hook."""
    module = lm.module_for(hookpoint)
    if parse_hookpoint(hookpoint)[1] in INPUT_SITES:
        return module.register_forward_pre_hook(
            lambda _m, args, kwargs: fn(_first_arg(args, kwargs)), with_kwargs=True)
    return module.register_forward_hook(lambda _m, _inp, out: fn(output_tensor(out)))


@contextmanager
def capture(lm: LM, hookpoints: list[str], *, stop_early: bool = True) -> Iterator[dict]:
    """Yield a dict that fills with `hookpoint -> (batch, seq, d)` tensors during a forward.

    With `stop_early`, the forward is cut after the deepest needed block; run it through
    `run_captured` (or catch nothing: the context manager swallows the stop signal).
    """
    acts: dict[str, torch.Tensor] = {}
    handles, owner = [], get_ident()
    try:
        for hookpoint in hookpoints:
            def hook(tensor, hookpoint=hookpoint):
                if get_ident() != owner:
                    return
                acts[hookpoint] = tensor
                if stop_early and len(acts) == len(hookpoints):
                    raise _StopForward

            handles.append(_on_site(lm, hookpoint, hook))
        yield acts
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()


def run_captured(
    lm: LM, input_ids: torch.Tensor, hookpoints: list[str], *, bf16: bool = True,
    attention_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """One forward pass that returns the activations at `hookpoints` (on the LM's device),
    stopped early."""
    device = lm.device
    if attention_mask is not None:
        attention_mask = attention_mask.to(device)
    with (
        capture(lm, hookpoints) as acts,
        torch.inference_mode(),
        autocast(bf16, device),
        suppress(_StopForward),
    ):
        lm.model(input_ids=input_ids.to(device), attention_mask=attention_mask, use_cache=False)
    missing = set(hookpoints) - set(acts)
    if missing:
        raise RuntimeError(f"hooks did not fire for {sorted(missing)}")
    return acts


@contextmanager
def edit_output(lm: LM, hookpoint: str, fn) -> Iterator[None]:
    """Replace what `hookpoint` reads with `fn(it)` for every forward inside the block (in
    this thread): a module's output; for `attn_z` and `mlp_in` the input of the module
    (o_proj, the MLP); for `resid_mid` the attention's contribution, so that the residual
    stream itself (not only the MLP's view of it) carries the edit (`_edit_resid_mid`)."""
    owner = get_ident()
    layer, sub = parse_hookpoint(hookpoint)
    if sub == "resid_mid":
        with _edit_resid_mid(lm, layer, fn, owner):
            yield
        return

    def hook(_m, _inp, out):
        if get_ident() != owner:
            return None
        return _with_tensor(out, fn(output_tensor(out)))

    def pre_hook(_m, args, kwargs):
        if get_ident() != owner:
            return None
        if args:
            return (fn(args[0]), *args[1:]), kwargs
        key = next(iter(kwargs))
        return args, kwargs | {key: fn(kwargs[key])}

    module = lm.module_for(hookpoint)
    handle = (module.register_forward_pre_hook(pre_hook, with_kwargs=True)
              if sub in INPUT_SITES else module.register_forward_hook(hook))
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def _edit_resid_mid(lm: LM, layer: int, fn, owner: int) -> Iterator[None]:
    """resid_mid = the block's input + what attention adds; the edit adds
    fn(resid_mid) - resid_mid to the attention's contribution (its post-norm's output in
    gemma), so both the residual stream and the pre-MLP norm see fn(resid_mid)."""
    block = lm.layers[layer]
    lm.module_for(f"layers.{layer}.resid_mid")  # a clear error for parallel blocks
    seen: list[torch.Tensor] = []

    def block_in(_m, args, kwargs):
        if get_ident() == owner:
            seen[:] = [_first_arg(args, kwargs)]

    def attn_out(_m, _inp, out):
        if get_ident() != owner:
            return None
        added = output_tensor(out)
        mid = seen[0] + added
        return _with_tensor(out, added + (fn(mid) - mid).to(added.dtype))

    handles = [block.register_forward_pre_hook(block_in, with_kwargs=True),
               sublayer_output(block, "attn").register_forward_hook(attn_out)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _with_tensor(like: object, tensor: torch.Tensor) -> object:
    """`like` (a block's output: a tensor or a tuple led by one) with its tensor replaced."""
    return (tensor, *like[1:]) if isinstance(like, tuple) else tensor


@contextmanager
def record_blocks(lm: LM) -> Iterator[list]:
    """Yield a list that fills with every block's raw output (tensor or tuple) in a forward."""
    outs, owner = [None] * lm.n_layers, get_ident()
    handles = []
    try:
        for i, block in enumerate(lm.layers):
            def hook(_m, _inp, out, i=i):
                if get_ident() == owner:
                    outs[i] = out
            handles.append(block.register_forward_hook(hook))
        yield outs
    finally:
        for handle in handles:
            handle.remove()


_resume_lock = Lock()


@contextmanager
def resume_after(lm: LM, layer: int, recorded: object, tensor: torch.Tensor) -> Iterator[None]:
    """In this thread, blocks 0..layer do no work and block `layer` returns `tensor` (in the
    structure of its `recorded` output): a forward resumes from a cached residual stream.

    Blocks 0..layer-1 return the same object, which the next skipped block ignores. Other
    threads run the real blocks. One resume at a time, so restoring `forward` is safe.
    """
    owner, out = get_ident(), _with_tensor(recorded, tensor)
    blocks = list(lm.layers)[:layer + 1]
    with _resume_lock:
        saved = [block.__dict__.get("forward") for block in blocks]
        try:
            for block in blocks:
                def forward(*args, _real=block.forward, **kwargs):
                    return out if get_ident() == owner else _real(*args, **kwargs)
                block.forward = forward
            yield
        finally:
            for block, before in zip(blocks, saved, strict=True):
                block.__dict__.pop("forward", None)
                if before is not None:
                    block.forward = before


def hooks_left(lm: LM) -> int:
    """Hooks and replaced `forward`s of this package still on the model's modules: 0 when no
    capture, edit or resume is active. Transformers installs hooks of its own (output
    capturing, kept for the model's life); those are not counted."""
    def ours(fn: object) -> bool:
        return (getattr(fn, "__module__", None) or "").startswith(__name__.partition(".")[0])

    n = 0
    for module in lm.model.modules():
        n += sum(map(ours, (*module._forward_hooks.values(),
                            *module._forward_pre_hooks.values())))
        n += ours(module.__dict__.get("forward"))
    return n
