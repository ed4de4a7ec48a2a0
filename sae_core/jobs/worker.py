"""One background thread builds one atlas at a time for every visitor of the app.

Visitors read `status()` (a frozen snapshot) and may `cancel()`; the build stops at its
next progress report, and starting the same job again resumes it (stages.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..lm import LM
from .stages import BuildJob, ready_parts, stages_of
from .status import BuildStatus, StageClock, advanced

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """Raised inside a build's progress report after `cancel()`."""


class WorkerBusy(ValueError):
    """Another atlas is being built; one build at a time."""


class BuildWorker:
    """Builds `BuildJob`s one at a time in a daemon thread; `lm_for(model)` supplies the
    model (the app passes its shared session cache)."""

    def __init__(self, lm_for: Callable[[str], LM]) -> None:
        self._lm_for = lm_for
        self._lock = threading.Lock()
        self._status = BuildStatus()
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()

    def status(self) -> BuildStatus:
        with self._lock:
            return self._status

    def start(self, job: BuildJob, then: BuildJob | None = None) -> BuildStatus:
        """Start `job`, and `then` when it is done (the app's two rounds: a quick atlas,
        then the full one); the same folder while it runs is a no-op, another WorkerBusy."""
        folder = Path(job.folder).resolve()
        with self._lock:
            if self._status.active:
                if self._status.folder == folder:
                    return self._status
                raise WorkerBusy(f"{self._status.folder.name} is being built "
                                 f"({self._status.stage}); one build at a time")
            self._cancel.clear()
            self._status = BuildStatus("running", folder, ready=ready_parts(folder))
            jobs = [replace(job, folder=folder)]
            jobs += [replace(then, folder=Path(then.folder).resolve())] if then else []
            self._thread = threading.Thread(target=self._run_all, args=(jobs,),
                                            name="atlas-build", daemon=True)
            self._thread.start()
            return self._status

    def cancel(self) -> None:
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> BuildStatus:
        """Block until the current build ends (tests, scripts)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.status()

    def _set(self, **changes) -> None:
        with self._lock:
            self._status = replace(self._status, **changes)

    def _report(self, clock: StageClock):
        def report(message: str, fraction: float, **stats) -> None:
            if self._cancel.is_set():
                raise Cancelled
            with self._lock:
                self._status = advanced(self._status, clock, message, fraction, stats)
        return report

    def _run_all(self, jobs: list[BuildJob]) -> None:
        for i, job in enumerate(jobs):
            if i:  # the next round: a fresh status for its folder
                with self._lock:
                    self._status = BuildStatus("running", job.folder,
                                               ready=ready_parts(job.folder))
            self._run(job)
            if self.status().state != "done":
                return

    def _run(self, job: BuildJob) -> None:
        try:
            lm = self._lm_for(job.data.model)
            for stage in stages_of(job):
                if not stage.done(job.folder):
                    self._set(stage=stage.name, message=f"starting: {stage.name}",
                              fraction=0.0, eta_s=None)
                    stage.run(job, lm, self._report(StageClock()))
                self._set(ready=ready_parts(job.folder))
            self._set(state="done", stage="", message="finished", fraction=1.0, eta_s=None)
        except Cancelled:
            self._set(state="cancelled", message="cancelled; starting it again resumes it")
        except Exception as err:  # a visitor sees the reason; the app stays up
            log.exception("atlas build failed")
            self._set(state="failed", error=f"{type(err).__name__}: {err}")
