"""A short greedy check of steering recipes on the probe prompts: does the text they make
the model write name the concept, and does it loop?

The pushed measures (effect.py) read the unsteered answer, so they cannot see the text drift
towards the concept or fall into a loop; this check writes it. Up to FEW_ROWS rows decode
at about the cost of one (generation.py), so all recipes of a prompt share one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from ..atlas.layout import LoadedAtlas
from .concept_tokens import count_mentions
from .edits import Steering
from .effect import Effect
from .fluency import repeated_share
from .generation import FEW_ROWS, GenConfig, generate

CHECK_TOKENS = 32


@dataclass(frozen=True)
class TextCheck:
    named: int
    """Prompts whose steered text names the concept while the unsteered text does not."""
    prompts: int
    repeated: float
    """Mean share of repeated 3-grams in the steered texts (fluency.repeated_share)."""


def check_texts(loaded: LoadedAtlas, norms: dict[str, float], prompts: Sequence[Tensor],
                rows: Sequence[Steering], words: Sequence[str], *,
                tokens: int = CHECK_TOKENS) -> list[TextCheck]:
    """One TextCheck per row: greedy continuations of every prompt (token ids)."""
    gen = GenConfig(max_new_tokens=tokens)
    named, repeated = [0] * len(rows), [0.0] * len(rows)
    per_batch = FEW_ROWS - 1  # and the unsteered row
    for ids_P in prompts:
        for start in range(0, len(rows), per_batch):
            chunk = list(rows[start:start + per_batch])
            outs = generate(loaded.lm, loaded.saes, norms, ids_P, [None, *chunk], gen,
                            outlier_factor=loaded.outlier_factor)
            texts = [loaded.lm.tokenizer.decode(o, skip_special_tokens=True) for o in outs]
            plain = count_mentions(texts[0], words) > 0
            for i, (text, new) in enumerate(zip(texts[1:], outs[1:], strict=True)):
                named[start + i] += int(not plain and count_mentions(text, words) > 0)
                repeated[start + i] += repeated_share(new) / len(prompts)
    return [TextCheck(n, len(prompts), r) for n, r in zip(named, repeated, strict=True)]


def preference(check: TextCheck, effect: Effect) -> tuple:
    """Which trial to recommend: texts that name the concept on more prompts, then loop
    less, then cost less KL."""
    return check.named, -round(check.repeated, 1), -effect.kl


def by_preference(checks: Sequence[TextCheck], effects: Sequence[Effect]) -> list[int]:
    """Indices of the trials, the one to recommend first (ties keep the trials' order)."""
    return sorted(range(len(checks)), key=lambda i: preference(checks[i], effects[i]),
                  reverse=True)
