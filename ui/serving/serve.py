"""How the app is served: address, public mode and the queue's limits.

A Hugging Face Space runs `app.py` with `GRADIO_SERVER_NAME=0.0.0.0`, the port in the
environment and `SPACE_ID` set; locally the app listens on 127.0.0.1:7860. Command-line
options win over the environment only when given.

When the queue is full, Gradio 6.31 answers `POST /gradio_api/queue/join` with HTTP 503
(queueing.Queue.push: "queue_full"), and its browser client ignores the server's text and
shows a fixed error toast: "This application is currently busy. Please try again." (the
constant `ne` of the bundled client, templates/frontend/assets/index-*.js). The message
cannot be set from Python; `BUSY_MESSAGE` records what the visitor sees.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
PUBLIC_QUEUE_SIZE = 20
"""Events waiting at most, in public mode. Two cores serve ~2 steering generations (~3 s
each) at once, so 20 waiting clear in about half a minute; beyond that a visitor is told
the app is busy rather than left waiting for minutes."""
BUSY_MESSAGE = "This application is currently busy. Please try again."
"""What Gradio's client shows when the queue is full (fixed in its JavaScript)."""


class ServeError(ValueError):
    """A bad address or port in the command line or the environment."""


def _port(raw: str | int, where: str) -> int:
    try:
        port = int(str(raw).strip())
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise ServeError(f"{where}={raw!r} is not a port number (1-65535)")
    return port


def server_address(host_arg: str | None, port_arg: int | None,
                   environ: Mapping[str, str] = os.environ) -> tuple[str, int]:
    """(host, port) to serve on: `--host`/`--port` when given, else `GRADIO_SERVER_NAME`
    (default 127.0.0.1) and `GRADIO_SERVER_PORT`, then `PORT` (default 7860)."""
    if host_arg is not None:
        host, where = host_arg.strip(), "--host"
    else:
        host, where = environ.get("GRADIO_SERVER_NAME", "").strip() or DEFAULT_HOST, \
            "GRADIO_SERVER_NAME"
    if not host or any(c.isspace() for c in host):
        raise ServeError(f"{where}={host!r} is not a host name or address")
    if port_arg is not None:
        return host, _port(port_arg, "--port")
    for name in ("GRADIO_SERVER_PORT", "PORT"):
        if environ.get(name, "").strip():
            return host, _port(environ[name], name)
    return host, DEFAULT_PORT


def is_public(flag: bool, environ: Mapping[str, str] = os.environ) -> bool:
    """Public mode: asked for with `--public`, or running on a Space (`SPACE_ID` is set)."""
    return bool(flag or environ.get("SPACE_ID", "").strip())


@dataclass(frozen=True)
class EventLimits:
    """How many runs of each kind of event go at once (`concurrency_limit=` of an event)."""

    hub_load: int
    """Loading a set from the Hub: downloads, holds and evaluates a whole SAE set."""
    generate: int
    """Steered generation and concept search: one forward per token each."""
    default: int
    """Every other queued event (pages, live view, search): short reads, one at a time per
    event as Gradio does by default; queue=False events skip the queue and its limits."""


def event_limits(public: bool) -> EventLimits:
    """Per-event limits the tabs use: more work at once than cores only slows everyone. A
    Space's container may report the host's cores, not its 2 vCPUs: public mode says 2."""
    cores = os.cpu_count() or 2
    return EventLimits(hub_load=1, generate=2 if public else max(2, cores), default=1)


def queue_options(public: bool) -> dict:
    """Keyword arguments for `demo.queue(...)` (Gradio 6.31: status_update_rate, api_open,
    max_size, default_concurrency_limit). Public mode bounds the queue and closes the REST
    routes that would skip it."""
    options = {"default_concurrency_limit": event_limits(public).default}
    if public:
        options |= {"max_size": PUBLIC_QUEUE_SIZE, "api_open": False}
    return options


MALLOC_ARENAS = 2
"""glibc malloc arenas at most (M_ARENA_MAX). By default glibc gives each busy thread its own
arena (up to 8 per core) and rarely returns their memory: with 32 visitors at once
(bench/load.py) the server held 3.9 GB after the first round with the default and 2.2 GB
with 2, at the same speed."""


def cap_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process (call before serving); False where the C
    library is not glibc (nothing changes there)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-8, arenas))  # -8: M_ARENA_MAX
    except (OSError, AttributeError):
        return False
