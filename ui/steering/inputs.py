"""The Steering tab's inputs: their limits (the prompt's is the library's,
`steer.generation.MAX_PROMPT_CHARS`), and numbers from the form or an API caller checked
by the library's one input checker (`sae_core.errors.check_number`, which reads text too: a
stranger may send "3", text, NaN or 1e300 where the form sends a number)."""

from __future__ import annotations

from sae_core.errors import check_number, check_whole
from sae_core.steer.edits import MAX_STRENGTH
from sae_core.steer.generation import MAX_NEW_TOKENS, MAX_TEMPERATURE, GenConfig

MAX_EXTRA_CHARS = 500
"""Longest "more features" text (at most 8 features steer at once anyway)."""
MAX_CONCEPT_CHARS = 60
MAX_RELATED_CHARS = 1000
"""Longest concept and related-words texts (the library takes at most 24 words of 40)."""
MAX_LAYER, MAX_FEATURE, MAX_SEED = 10_000, 10_000_000, 2**31 - 1


def whole(value, name: str, lo: int = 0, hi: int = MAX_FEATURE) -> int:
    """A whole number in lo..hi ("3" counts as 3); BadInput naming it otherwise."""
    return check_whole(value, name, lo, hi, from_text=True)


def steering_strength(value, name: str = "strength") -> float:
    """A steering strength as the app takes it: within the library's ±MAX_STRENGTH."""
    return check_number(value, name, -MAX_STRENGTH, MAX_STRENGTH, from_text=True)


def gen_config(max_tokens, temperature, seed) -> GenConfig:
    """The generation settings of the form, each checked."""
    return GenConfig(max_new_tokens=whole(max_tokens, "max tokens", 1, MAX_NEW_TOKENS),
                     temperature=check_number(temperature, "temperature", 0, MAX_TEMPERATURE,
                                              from_text=True),
                     seed=whole(seed, "seed", -MAX_SEED, MAX_SEED))
