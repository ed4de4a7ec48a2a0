"""The Steering tab's inputs: their limits, and numbers from the form or an API caller checked
(a stranger may send text, NaN or 1e300 where the form sends a number)."""

from __future__ import annotations

from sae_core.errors import check_number, check_whole
from sae_core.steer.generation import MAX_NEW_TOKENS, GenConfig

MAX_PROMPT_CHARS = 2000
"""Longest prompt (the library also stops at 512 tokens)."""
MAX_EXTRA_CHARS = 500
"""Longest "more features" text (at most 8 features steer at once anyway)."""
MAX_CONCEPT_CHARS = 60
MAX_RELATED_CHARS = 1000
"""Longest concept and related-words texts (the library takes at most 24 words of 40)."""
MAX_LAYER, MAX_FEATURE, MAX_SEED = 10_000, 10_000_000, 2**31 - 1


def number(value, name: str):
    """A number from a form or an API caller ("3" counts as 3); the range is checked later."""
    if isinstance(value, str):
        try:
            return float(value[:40])
        except ValueError:
            raise ValueError(f"{name} must be a number, got {value[:40]!r}") from None
    return value


def whole(value, name: str, lo: int = 0, hi: int = MAX_FEATURE) -> int:
    """A whole number in lo..hi; BadInput naming it otherwise."""
    return check_whole(number(value, name), name, lo, hi)


def gen_config(max_tokens, temperature, seed) -> GenConfig:
    """The generation settings of the form, each checked."""
    return GenConfig(max_new_tokens=whole(max_tokens, "max tokens", 1, MAX_NEW_TOKENS),
                     temperature=check_number(number(temperature, "temperature"),
                                              "temperature", 0, 5),
                     seed=whole(seed, "seed", -MAX_SEED, MAX_SEED))
