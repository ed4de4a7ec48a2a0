"""Every failure of a callback reaches the visitor as a clear `gr.Error`, never a bare "Error".

`@friendly("doing X")` on a callback (or `with as_messages("doing X"):` around a block):
- a `gr.Error` passes through;
- `NotReady` (no SAE set yet, one being built) becomes an info toast in plain words, and
  the outputs stay as they were: the visitor did nothing wrong (a program calling the API
  gets the same words as an error);
- a ValueError (the library's `BadInput` and `HubError` are ValueErrors) becomes a `gr.Error`
  with its own message, which says what is allowed (UnicodeErrors excepted: they are
  ValueErrors that come from a bug, not from the input);
- anything else (RuntimeError, KeyError, OSError, a torch error...) becomes "Something went
  wrong while doing X; nothing was changed. (RuntimeError)" and its traceback is logged:
  its text may hold server paths or internals, so the visitor sees only its type.

`text_arg` checks a text input's length on the server (a Textbox's max_length is enforced
only by the browser; API callers skip it), with the library's `check_text`.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import gradio as gr
from gradio.context import LocalContext
from gradio.exceptions import Error as GradioError

from sae_core.errors import BadInput, check_text

log = logging.getLogger("sae_atlas.ui")
F = TypeVar("F", bound=Callable)
MAX_MESSAGE_CHARS = 600
"""A message longer than this is cut (it may quote the visitor's input)."""


class NotReady(Exception):
    """Nothing to show yet through no fault of the visitor (no SAE set, or one still being
    built): `friendly` shows its text as an info toast, never an error, and leaves every
    output as it was."""


def from_client() -> bool:
    """Whether the running event was sent by gradio_client or MCP rather than by the page
    (Gradio's clients set the header `x-gradio-user`: "api", "mcp", and "app" for the page)."""
    request = LocalContext.request.get(None)
    headers = getattr(request, "headers", None) or {}
    return headers.get("x-gradio-user") in ("api", "mcp")


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS - 1] + "…"


@contextmanager
def as_messages(doing: str) -> Iterator[None]:
    """Turn any failure inside the block into a clear `gr.Error` (see the module doc)."""
    try:
        yield
    except (GradioError, NotReady):
        raise
    except ValueError as err:
        if isinstance(err, UnicodeError):  # a ValueError, but from our code, not the input
            _failed(doing, err)
        raise gr.Error(_short(str(err)) or f"Bad input while {doing}.") from err
    except Exception as err:
        _failed(doing, err)


def _failed(doing: str, err: Exception):
    log.error("callback failed while %s", doing, exc_info=err)
    raise gr.Error(f"Something went wrong while {doing}; nothing was changed. "
                   f"({type(err).__name__})") from err


def _not_ready(err: NotReady) -> dict:
    """An info toast and one skip, which leaves every output as it was; a program asking
    gets the words as an error."""
    if from_client():
        raise gr.Error(str(err)) from err
    gr.Info(str(err))
    return gr.skip()


def friendly(doing: str) -> Callable[[F], F]:
    """Decorate a callback so that its failures are clear `gr.Error`s. The signature and
    type hints stay (Gradio reads them for gr.Progress, event data and the API docs)."""
    def wrap(fn: F) -> F:
        if inspect.isgeneratorfunction(fn):  # a streaming callback: its steps too
            @functools.wraps(fn)
            def streamed(*args, **kwargs):
                try:
                    with as_messages(doing):
                        yield from fn(*args, **kwargs)
                except NotReady as err:
                    yield _not_ready(err)
            return streamed  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            try:
                with as_messages(doing):
                    return fn(*args, **kwargs)
            except NotReady as err:
                return _not_ready(err)
        return wrapped  # type: ignore[return-value]
    return wrap


def text_arg(value: object, field: str, max_chars: int, *, empty_ok: bool = True) -> str:
    """A text input as a string ("" for None) of at most `max_chars` characters, else a
    `gr.Error` that names the field and the limit (the library's `check_text`)."""
    try:
        return check_text("" if value is None else value, field, max_chars=max_chars,
                          empty_ok=empty_ok)
    except BadInput as err:
        raise gr.Error(str(err)) from None
