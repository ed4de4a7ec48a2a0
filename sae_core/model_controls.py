"""Control models: the same architecture without what training put in its weights.

An atlas built through a control model (BuildConfig.control) tells apart what the model
computes from what any SAE finds in token statistics alone: if the random model's SAEs show
the same per-layer picture, the picture is about SAEs and tokens, not about the model.
- `random_init`: every weight re-drawn by the model's own initialiser (transformers'
  `_init_weights`, run when a model is built from its config), as before training.
- `shuffled`: every weight tensor's entries permuted at random within the tensor: each
  tensor keeps its trained values (scale, spread, outliers), none keeps its arrangement.
  Norm weights are shuffled too: their per-channel gains point at channels of the trained
  residual basis (e.g. the massive-activation channels), an arrangement, not a scale.
Both share the tokenizer and keep every shape, dtype and device; the model passed in is
never changed. An atlas records its control in atlas.json (`control`, `control_seed`,
`control_of`); `lm_for_atlas` rebuilds the model an atlas was built through from the real
one."""

from __future__ import annotations

import copy
from typing import get_args

import torch

from .config import Control
from .lm import LM, find_layers

CONTROLS: tuple[str, ...] = get_args(Control)


def _wrap(lm: LM, model: torch.nn.Module, control: str, seed: int) -> LM:
    model.eval().requires_grad_(False)
    return LM(model=model, tokenizer=lm.tokenizer, name=lm.name, layers=find_layers(model),
              control=control, control_seed=seed)


def random_init(lm: LM, seed: int = 0) -> LM:
    """A copy of `lm` with every weight drawn afresh by its class's initialiser under
    `seed` (the same seed gives the same weights); buffers (rotary frequencies) come from
    the config as they would for a trained model. The global RNG is left as it was."""
    config = copy.deepcopy(lm.model.config)
    dtype = next(lm.model.parameters()).dtype
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # built on the CPU: the draw is then the same whatever device the LM is on
        model = type(lm.model)(config)  # post_init runs _init_weights on every module
    return _wrap(lm, model.to(device=lm.device, dtype=dtype), "random-init", seed)


@torch.no_grad()
def shuffled(lm: LM, seed: int = 0) -> LM:
    """A copy of `lm` with the entries of every weight tensor (embeddings, every layer's
    matrices and norms, the output head) permuted within the tensor under `seed`: the same
    multiset of values per tensor. Tied weights stay tied (one tensor, shuffled once)."""
    model = copy.deepcopy(lm.model)
    gen = torch.Generator().manual_seed(seed)  # cpu: the permutation is drawn on the CPU
    for p in model.parameters():  # each shared tensor once
        order = torch.randperm(p.numel(), generator=gen).to(p.device)  # cpu: drawn above
        p.copy_(p.flatten()[order].view_as(p))
    return _wrap(lm, model, "shuffled", seed)


def apply_control(lm: LM, control: str, seed: int = 0) -> LM:
    """`lm` itself for "none", else its control model (CONTROLS), drawn from the real one."""
    if control not in CONTROLS:
        raise ValueError(f"unknown control {control!r}; use one of {', '.join(CONTROLS)}")
    if control == "none":
        return lm
    if lm.control != "none":  # a control of a control is neither
        raise ValueError(f"this model is already the {lm.control} control of {lm.name}")
    return (random_init if control == "random-init" else shuffled)(lm, seed)


def control_info(control: str, seed: int, real_name: str) -> dict:
    """What atlas.json records of a control build ({} for none): `control` (its kind),
    `control_seed` (the seed its weights were drawn with), `control_of` (the real model)."""
    if control == "none":
        return {}
    return {"control": control, "control_seed": seed, "control_of": real_name}


def lm_for_atlas(lm: LM, kind: str = "none", seed: int = 0) -> LM:
    """The model an atlas was built through (its atlas.json's `control`, `control_seed`):
    `lm` when it is that model already (the real one for a real atlas), else that control
    drawn from the real `lm`. Every reader of an atlas's SAEs runs them through this."""
    if lm.control == kind and (kind == "none" or lm.control_seed == seed):
        return lm
    if lm.control != "none":
        raise ValueError(f"the atlas was built through the {kind} control of {lm.name}, "
                         f"not its {lm.control} control (seed {lm.control_seed})")
    return apply_control(lm, kind, seed)
