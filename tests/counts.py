"""Counts the reliability tests report (bad-input cases tried, crashes survived), printed at
the end of the run by conftest's terminal summary, so CI shows how much was tried."""

from collections import Counter

COUNTS: Counter[str] = Counter()


def count(what: str, n: int = 1) -> None:
    """Add `n` to the count called `what` (e.g. "bad-input cases tried")."""
    COUNTS[what] += n
