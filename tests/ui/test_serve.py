"""Serving: the address from arguments and environment, public mode, and a bounded queue
that answers "busy" (HTTP 503) when full."""

import threading
import time

import httpx
import pytest

from tests.browser import served
from ui.serving import serve
from ui.serving.serve import ServeError, event_limits, is_public, queue_options, server_address

SPACE = {"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "7861", "PORT": "9000"}


@pytest.mark.parametrize("host, port, environ, expected", [
    (None, None, {}, ("127.0.0.1", 7860)),
    (None, None, SPACE, ("0.0.0.0", 7861)),
    (None, None, {"PORT": "9000"}, ("127.0.0.1", 9000)),
    (None, None, {"GRADIO_SERVER_PORT": " ", "PORT": "9000"}, ("127.0.0.1", 9000)),
    ("10.0.0.2", None, SPACE, ("10.0.0.2", 7861)),
    (None, 8000, SPACE, ("0.0.0.0", 8000)),
    ("localhost", 8001, SPACE, ("localhost", 8001)),
    (None, None, {"GRADIO_SERVER_NAME": ""}, ("127.0.0.1", 7860)),
])
def test_server_address_arguments_win_only_when_given(host, port, environ, expected):
    assert server_address(host, port, environ) == expected


@pytest.mark.parametrize("host, port, environ, message", [
    (None, None, {"GRADIO_SERVER_PORT": "http"}, "GRADIO_SERVER_PORT='http' is not a port"),
    (None, None, {"PORT": "70000"}, "PORT='70000' is not a port"),
    (None, None, {"GRADIO_SERVER_PORT": "0", "PORT": "9000"}, "GRADIO_SERVER_PORT='0'"),
    (None, -1, {}, "--port=-1 is not a port"),
    ("", None, {}, "--host='' is not a host"),
    (None, None, {"GRADIO_SERVER_NAME": "a b"}, "GRADIO_SERVER_NAME='a b' is not a host"),
])
def test_bad_addresses_are_clear_errors(host, port, environ, message):
    with pytest.raises(ServeError, match=message):
        server_address(host, port, environ)


def test_public_mode_on_a_space_or_when_asked():
    assert not is_public(False, {}) and not is_public(False, {"SPACE_ID": " "})
    assert is_public(True, {}) and is_public(False, {"SPACE_ID": "me/sae-atlas"})


def test_queue_options_fit_gradio_and_bound_the_public_queue():
    import gradio as gr

    for public in (True, False):
        with gr.Blocks() as demo:
            gr.Button().click(lambda: None)
        demo.queue(**queue_options(public))  # the keywords Blocks.queue takes
        assert demo._queue.max_size == (serve.PUBLIC_QUEUE_SIZE if public else None)
        assert demo.api_open is (not public)  # not on a Space here
    assert queue_options(True)["api_open"] is False
    assert event_limits(True).generate == 2 and event_limits(True).hub_load == 1


def _join(client: httpx.Client, url: str, session: str) -> int:
    body = {"data": [], "fn_index": 0, "session_hash": session, "event_data": None,
            "trigger_id": None}
    return client.post(f"{url}/gradio_api/queue/join", json=body).status_code


@pytest.mark.parametrize("public", [True, False])
def test_a_full_public_queue_answers_busy(public, monkeypatch):
    """One event runs, PUBLIC_QUEUE_SIZE (here 2) wait; the next is refused with HTTP 503,
    which Gradio's client shows as BUSY_MESSAGE. Without public mode nothing is refused."""
    import gradio as gr

    monkeypatch.setattr(serve, "PUBLIC_QUEUE_SIZE", 2)
    release = threading.Event()
    started = threading.Event()

    def slow():
        started.set()
        release.wait(20)

    with gr.Blocks() as demo:
        gr.Button().click(slow, concurrency_limit=1)
    demo.queue(**queue_options(public))
    with served(demo) as url, httpx.Client(timeout=10) as client:
        try:
            codes = [_join(client, url, "s0")]
            assert started.wait(10)  # the first event runs and left the queue
            codes += [_join(client, url, f"s{i}") for i in range(1, 5)]
        finally:
            release.set()
            time.sleep(0.2)
    assert codes == ([200, 200, 200, 503, 503] if public else [200] * 5)


def test_malloc_arenas_are_capped_on_glibc():
    import platform

    from ui.serving.serve import cap_malloc_arenas

    assert cap_malloc_arenas() is (platform.libc_ver()[0] == "glibc")
