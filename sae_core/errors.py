"""Typed errors for bad input to the library's public functions, and the checks that raise
them. `BadInput` subclasses ValueError so existing `except ValueError` callers keep working;
its message names the field and what is allowed, in words a visitor understands.
"""

from __future__ import annotations

import math
import re
import sys

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


_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
"""A number as a visitor types it: decimal digits, a point, an exponent. Not "0x10",
"1_000", "nan", "inf" or other scripts' digits, which Python's float() would take."""
_WHOLE_TEXT = re.compile(r"[+-]?[0-9]+")
MAX_NUMBER_CHARS = 40
"""Longest text read as a number (longer is refused before any conversion)."""


def _as_number(value: object, from_text: bool) -> int | float | None:
    """`value` as an int or float, or None when it is none: bools are no numbers; text is
    read only `from_text`, whole digits exactly as an int ("12" -> 12, never 12.0)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if from_text and isinstance(value, str):
        text = value.strip()
        if len(text) <= MAX_NUMBER_CHARS and _NUMBER_TEXT.fullmatch(text):
            return int(text) if _WHOLE_TEXT.fullmatch(text) else float(text)
    return None


def check_number(value: object, field: str, lo: float, hi: float | None = None, *,
                 whole: bool = False, from_text: bool = False) -> float:
    """`value` as a finite number in lo..hi (None: no upper bound): an int when `whole`
    (3.0 counts as 3; 3.5 does not), else a float. Bools, NaN, infinities and anything
    else are refused with one message that names the field and the range. `from_text`
    also reads text, as a form or an API caller sends it (" 3.5 "); the library's own
    checks leave it off, so a config never keeps a string that looked like a number.
    The input checker of the library and the app: every number a caller gives goes
    through here."""
    n = _as_number(value, from_text)
    if whole and isinstance(n, float) and math.isfinite(n) and n == int(n):
        n = int(n)
    if whole:
        ok = isinstance(n, int)
    else:  # an int too large for a float (10**400) is no finite number either
        ok = n is not None and (math.isfinite(n) if isinstance(n, float) else
                                abs(n) <= sys.float_info.max)
    if not ok or n < lo or (hi is not None and n > hi):  # int and float compare exactly
        kind = "a whole number" if whole else "a number"
        shown = (lambda x: f"{x:,}") if whole else (lambda x: f"{x:g}")
        allowed = (f"from {shown(lo)} to {shown(hi)}" if hi is not None
                   else f"of at least {shown(lo)}")
        raise BadInput(field, f"{field} must be {kind} {allowed}, got {_shown(value)}")
    return n if whole else float(n)


def check_whole(value: object, field: str, lo: int, hi: int | None = None, *,
                from_text: bool = False) -> int:
    """`check_number` for a whole number: `value` as an int in lo..hi."""
    return check_number(value, field, lo, hi, whole=True, from_text=from_text)


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
