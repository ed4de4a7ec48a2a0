"""Capture activations at any hookpoints in one forward pass; hooks always removed.

Hooks act only in the thread that installed them: the app serves many visitors from one
model, and one visitor's capture or steering must never touch another's forward pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from threading import get_ident

import torch

from .lm import LM


class _StopForward(Exception):
    """Raised after the last needed block so the rest of the model never runs."""


def _output_tensor(output: object) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


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
            module = lm.module_for(hookpoint)

            def hook(_m, _inp, out, hookpoint=hookpoint):
                if get_ident() != owner:
                    return
                acts[hookpoint] = _output_tensor(out)
                if stop_early and len(acts) == len(hookpoints):
                    raise _StopForward

            handles.append(module.register_forward_hook(hook))
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
    """One forward pass that returns the activations at `hookpoints`, stopped early."""
    with (
        capture(lm, hookpoints) as acts,
        torch.inference_mode(),
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16),
        suppress(_StopForward),
    ):
        lm.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    missing = set(hookpoints) - set(acts)
    if missing:
        raise RuntimeError(f"hooks did not fire for {sorted(missing)}")
    return acts


@contextmanager
def edit_output(lm: LM, hookpoint: str, fn) -> Iterator[None]:
    """Replace `hookpoint`'s output with `fn(output)` for every forward inside the block
    (in this thread)."""
    owner = get_ident()

    def hook(_m, _inp, out):
        if get_ident() != owner:
            return None
        if isinstance(out, tuple):
            return (fn(out[0]), *out[1:])
        return fn(out)

    handle = lm.module_for(hookpoint).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
