"""What a build looks like from outside: a frozen snapshot, and the rates behind it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

State = Literal["idle", "running", "done", "failed", "cancelled"]


@dataclass(frozen=True)
class BuildStatus:
    """One look at the worker; every field is safe to show a visitor."""

    state: State = "idle"
    folder: Path | None = None
    """The atlas being built (or last built)."""
    stage: str = ""
    """The part being built: "SAEs", "layer map", "feature index" or "presets"."""
    message: str = ""
    fraction: float = 0.0
    """Of the current stage, 0..1."""
    tok_s: float | None = None
    """LM tokens per second while training the SAEs."""
    eta_s: float | None = None
    """Seconds left in the current stage, from its rate so far."""
    mean_fvu: float | None = None
    """Mean FVU over layers of the latest training batches."""
    ready: tuple[str, ...] = ()
    """Parts finished so far, in build order."""
    error: str | None = None
    started: float = field(default_factory=time.time)

    @property
    def active(self) -> bool:
        return self.state == "running"


@dataclass
class StageClock:
    """Rate of one stage since its first report (a resumed stage starts part-way)."""

    t0: float = 0.0
    fraction0: float | None = None
    tokens0: int | None = None

    def eta(self, fraction: float, now: float) -> float | None:
        if self.fraction0 is None:
            self.t0, self.fraction0 = now, fraction
            return None
        done = fraction - self.fraction0
        return (now - self.t0) / done * (1 - fraction) if done > 0 else None

    def rate(self, tokens: int | None, now: float) -> float | None:
        if tokens is None:
            return None
        if self.tokens0 is None:
            self.tokens0 = tokens
            return None
        return (tokens - self.tokens0) / (now - self.t0) if now > self.t0 else None


def advanced(status: BuildStatus, clock: StageClock, message: str, fraction: float,
             stats: dict) -> BuildStatus:
    """`status` after a progress report of its current stage."""
    now = time.time()
    eta = clock.eta(fraction, now)
    tok_s = clock.rate(stats.get("tokens"), now)
    fvu = stats.get("mean_fvu")
    return replace(status, message=message, fraction=fraction, eta_s=eta,
                   tok_s=tok_s if tok_s is not None else status.tok_s,
                   mean_fvu=fvu if fvu is not None else status.mean_fvu)
