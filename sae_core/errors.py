"""Typed errors for bad input to the library's public functions, and the checks that raise
them. `BadInput` subclasses ValueError so existing `except ValueError` callers keep working;
its message names the field and what is allowed, in words a visitor understands.
"""

from __future__ import annotations

import math
import re

MAX_TEXT_CHARS = 100_000
"""Longest text any public function reads; longer text is refused before any work."""
_REPO_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")
MAX_REPO_ID_CHARS = 96
"""huggingface_hub's own limit for a repo id."""


class BadInput(ValueError):
    """A public function got input it cannot use; `field` names the argument."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _shown(value: object) -> str:
    """A value quoted in a message: short, whatever it is."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_text(value: object, field: str, *, max_chars: int = MAX_TEXT_CHARS,
               empty_ok: bool = False) -> str:
    """`value` as a string with lone surrogates (which no tokenizer encodes) replaced by
    U+FFFD; BadInput when it is no string, blank (unless `empty_ok`) or over `max_chars`."""
    if not isinstance(value, str):
        raise BadInput(field, f"{field} must be text, got {type(value).__name__}")
    if len(value) > max_chars:
        raise BadInput(field, f"{field} is {len(value):,} characters long; the limit is "
                              f"{max_chars:,}")
    if not empty_ok and not value.strip():
        raise BadInput(field, f"{field} is empty: type some text first")
    return without_surrogates(value)


def without_surrogates(text: str) -> str:
    """`text` with lone surrogates ("\\ud800") replaced by U+FFFD."""
    return text.encode("utf-8", "replace").decode("utf-8") if _has_surrogate(text) else text


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_whole(value: object, field: str, lo: int, hi: int | None = None) -> int:
    """`value` as an int in lo..hi (3.0 counts as 3; bools, NaN, 3.5 and text do not)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and value == int(value)
    if not ok or int(value) < lo or (hi is not None and int(value) > hi):
        allowed = f"from {lo:,} to {hi:,}" if hi is not None else f"of at least {lo:,}"
        raise BadInput(field, f"{field} must be a whole number {allowed}, got {_shown(value)}")
    return int(value)


def check_number(value: object, field: str, lo: float, hi: float) -> float:
    """`value` as a finite float in lo..hi (bools and text are refused)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not lo <= value <= hi:
        raise BadInput(field, f"{field} must be a number from {lo:g} to {hi:g}, "
                              f"got {_shown(value)}")
    return float(value)


def check_repo_id(repo_id: object, field: str = "repo id") -> str:
    """A Hub repo id "NAME" or "OWNER/NAME" checked before any request: the pattern of
    huggingface_hub's `validate_repo_id`, no "..", no "--", no absolute path, at most
    MAX_REPO_ID_CHARS characters."""
    if not isinstance(repo_id, str):
        raise BadInput(field, f"{field} must be text, got {type(repo_id).__name__}")
    rid = repo_id.strip()
    parts = rid.split("/")
    bad = (not rid or len(rid) > MAX_REPO_ID_CHARS or len(parts) > 2 or ".." in rid
           or "--" in rid or rid.endswith(".git")
           or not all(_REPO_PART.match(p) for p in parts))
    if bad:
        raise BadInput(field, f"{field} {_shown(repo_id)} is not a Hugging Face repo id "
                              f"(OWNER/NAME of letters, digits, '-', '_' or '.', at most "
                              f"{MAX_REPO_ID_CHARS} characters)")
    return rid


def check_layer_range(layers: object) -> tuple[int, int] | None:
    """(first, last) layer numbers, first <= last, or None (every layer)."""
    if layers is None:
        return None
    if not isinstance(layers, list | tuple) or len(layers) != 2:
        raise BadInput("layers", f"layers must be (first, last) layer numbers, got "
                                 f"{_shown(layers)}")
    first, last = (check_whole(x, "layers", 0, 10**6) for x in layers)
    if first > last:
        raise BadInput("layers", f"the first layer ({first}) comes after the last ({last})")
    return first, last
