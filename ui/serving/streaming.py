"""Streaming a long computation to the page.

The work runs whole in one thread of its own: steering hooks act only in the thread that
installed them (sae_core/hooks.py), while Gradio may run each step of a generator callback
in another worker thread. The callback, a generator, yields what the work reports as it
goes: the latest report at most every `every_s` seconds, then the result.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

EVERY_S = 0.1
"""Shortest time between two updates sent to the page (a 48-token generation on 2 cores
writes a token every ~0.1 s)."""


def stream(work: Callable[[Callable[[Any], None]], Any], *, every_s: float | None = None
           ) -> Iterator[tuple[str, Any]]:
    """Run `work(report)` in a thread of its own; yield ("part", value) for its reports
    (skipping those superseded before they were sent; at most one per `every_s`, default
    EVERY_S), then ("done", its result). Its exception is raised here, in the caller's
    thread."""
    every_s = EVERY_S if every_s is None else every_s
    inbox: queue.Queue = queue.Queue()

    def run() -> None:
        try:
            inbox.put(("done", work(lambda value: inbox.put(("part", value)))))
        except BaseException as err:  # handed to the caller, which raises it
            inbox.put(("error", err))

    threading.Thread(target=run, name="stream", daemon=True).start()
    sent = float("-inf")
    while True:
        kind, value = inbox.get()
        while kind == "part" and not inbox.empty():  # only the latest report matters
            kind, value = inbox.get()
        if kind == "error":
            raise value
        if kind == "done":
            yield kind, value
            return
        if time.monotonic() - sent >= every_s:
            sent = time.monotonic()
            yield kind, value
