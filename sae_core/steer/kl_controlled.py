"""Steered generation with the dose controlled token by token: each token's next-token
distribution stays within `max_kl` nats of the unsteered model's (KL(steered || unsteered)).

A fixed strength that reads well on the first tokens can push later ones far off the
model's distribution, and once one odd token is written the steered text feeds on itself
(loops). Here the KV cache always holds the unsteered model's reading of the text written
so far, and at each step the current token is read once unedited and once per fraction of
the steering (one batch, sharing that cache): the largest fraction whose distribution is
within the bound writes the next token, or the unsteered one when none is. Only the current
position is ever edited, so the bound holds exactly for every token written.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import Tensor

from ..activations import OUTLIER_FACTOR
from ..atlas.layout import LoadedAtlas
from ..errors import BadInput, check_number
from ..lm import LM
from ..norms import typical_norms
from ..sae import Sae
from .edits import Steering, check_steering, steering_hooks
from .generation import GenConfig, _FewRowsLinear, _pick, _stop_ids, prompt_ids

FRACTIONS = (1.0, 0.75, 0.5, 0.25)
"""Fractions of the steering tried at each step, largest first."""
MAX_FRACTIONS = 8


@dataclass(frozen=True)
class KlControlled:
    tokens: tuple[int, ...]
    """New token ids (cut before the first stop token)."""
    fractions: tuple[float, ...]
    """Fraction of the steering that wrote each token (0.0: none, the unsteered model)."""
    kls: tuple[float, ...]
    """KL(written || unsteered) of each token's next-token distribution, in nats."""


def check_max_kl(max_kl: object) -> float:
    value = check_number(max_kl, "max KL", 0, math.inf)
    if value == 0:
        raise BadInput("max KL", "max KL must be above 0 (0 is the unsteered model)")
    return value


def check_fractions(fractions: object) -> tuple[float, ...]:
    """A nonempty tuple of fractions in (0, 1], strictly descending."""
    if not isinstance(fractions, tuple | list) or not fractions:
        raise BadInput("fractions", "fractions must be a nonempty list of numbers")
    if len(fractions) > MAX_FRACTIONS:
        raise BadInput("fractions", f"at most {MAX_FRACTIONS} fractions, got {len(fractions)}")
    out = tuple(check_number(f, "fraction", 0, 1) for f in fractions)
    if min(out) <= 0:
        raise BadInput("fractions", "fractions must be above 0 (the unsteered model is "
                                    "always the last resort)")
    if any(a <= b for a, b in pairwise(out)):
        raise BadInput("fractions", f"fractions must be strictly descending, got {out}")
    return out


def scaled(steering: Steering, fraction: float) -> Steering:
    """`steering` with every part's strength multiplied by `fraction` (for a clamp: the
    value the feature is set to)."""
    parts = tuple(dataclasses.replace(f, strength=f.strength * fraction)
                  for f in steering.features)
    return dataclasses.replace(steering, features=parts)


@torch.inference_mode()
def generate_kl_controlled(
    lm: LM, saes: dict[str, Sae], norms: dict[str, float], ids_P: Tensor, steering: Steering,
    gen: GenConfig, *, max_kl: float, fractions: Sequence[float] = FRACTIONS,
    outlier_factor: float = OUTLIER_FACTOR, few_rows_linear: bool = True,
) -> KlControlled:
    """Continue `ids_P` steered by `steering` at the largest of `fractions` that keeps each
    token's KL(steered || unsteered) <= `max_kl` (unsteered where none does). The steering's
    `positions` does not matter: only the position being read is ever edited. Greedy or
    sampled as `gen` says (one shared uniform per step, as `generation.generate`)."""
    max_kl, fracs = check_max_kl(max_kl), check_fractions(fractions)
    check_steering(steering, saes)
    if not isinstance(ids_P, Tensor) or ids_P.ndim != 1 or len(ids_P) == 0:
        raise BadInput("prompt", "the prompt must be at least one token")
    P, M, n_text, dev = len(ids_P), len(fracs), len(lm.tokenizer), lm.device
    stop, rng = _stop_ids(lm), torch.Generator().manual_seed(gen.seed)
    rows = [None, *(scaled(steering, f) for f in fracs)]
    ids_P = ids_P.to(dev)
    tokens: list[int] = []
    chosen_fracs: list[float] = []
    kls: list[float] = []
    few = few_rows_linear and dev.type == "cpu"  # see generation._FewRowsLinear
    with _FewRowsLinear() if few else nullcontext():
        past = None
        if P > 1:  # the prompt minus its last token, unedited: the reference's cache
            past = lm.model(input_ids=ids_P[None, :-1], use_cache=True).past_key_values
        with steering_hooks(lm, saes, norms, rows, prompt_len=P,
                            outlier_factor=outlier_factor) as cursor:
            cur = ids_P[-1]
            for _ in range(gen.max_new_tokens):
                if past is not None:
                    past.batch_repeat_interleave(1 + M)  # row 0's past for every row
                cursor.offset = P - 1 + len(tokens)  # the position of `cur`
                out = lm.model(input_ids=cur.expand(1 + M, 1), past_key_values=past,
                               use_cache=True)
                past = out.past_key_values
                past.batch_select_indices(torch.zeros(1, dtype=torch.long, device=dev))
                logits_BV = out.logits[:, -1].float()
                logp_BV = logits_BV[:, :n_text].log_softmax(-1)  # tokens the text can hold
                kl_M = (logp_BV[1:].exp() * (logp_BV[1:] - logp_BV[:1])).sum(-1)
                step_kls = kl_M.clamp_min(0).tolist()  # >= 0 in exact arithmetic
                j = next((i for i, kl in enumerate(step_kls) if kl <= max_kl), None)
                row = 0 if j is None else j + 1
                logits_BV[:, n_text:] = -torch.inf  # padding rows of the vocabulary
                nxt = _pick(logits_BV[row:row + 1], gen, rng)[0]
                if bool(torch.isin(nxt, stop)):
                    break
                tokens.append(int(nxt))
                chosen_fracs.append(0.0 if j is None else fracs[j])
                kls.append(0.0 if j is None else step_kls[j])
                cur = nxt
    return KlControlled(tuple(tokens), tuple(chosen_fracs), tuple(kls))


def kl_controlled_text(loaded: LoadedAtlas, prompt: str, steering: Steering, gen: GenConfig,
                       *, max_kl: float, fractions: Sequence[float] = FRACTIONS) -> str:
    """The KL-controlled steered continuation of `prompt`, as text."""
    check_steering(steering, loaded.saes)
    ids_P = prompt_ids(loaded.lm, prompt, gen)
    hookpoints = sorted({f.hookpoint for f in steering.features})
    norms, _ = typical_norms(loaded.lm, loaded.saes, hookpoints, corpus=loaded.corpus)
    out = generate_kl_controlled(loaded.lm, loaded.saes, norms, ids_P, steering, gen,
                                 max_kl=max_kl, fractions=fractions,
                                 outlier_factor=loaded.outlier_factor)
    return loaded.lm.tokenizer.decode(list(out.tokens), skip_special_tokens=True)
