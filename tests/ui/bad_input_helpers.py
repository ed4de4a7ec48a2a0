"""The app served in-process over the tiny atlas, shared by the API and bad-input test
modules (one server per module)."""

from gradio_client import Client

import app
from sae_core.explore.feature_index import ensure_feature_index
from tests.browser import free_port
from ui.serving import session

BIG = "x" * 100_000
"""100k characters."""


def serve(tiny_atlas, **launch):
    """(client, base URL, the loaded atlas) of the app over the tiny atlas, shared by all
    cases; `launch`: more options of `demo.launch` (e.g. mcp_server=True)."""
    loaded = session.open_atlas(tiny_atlas)
    ensure_feature_index(tiny_atlas, lm=loaded.lm)
    demo = app.build_app(tiny_atlas)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                quiet=True, **launch)
    base = f"http://127.0.0.1:{port}"
    client = Client(f"{base}/", verbose=False)
    try:
        yield client, base, loaded
    finally:
        client.close()
        demo.close()


def still_answers(client, folder):
    """The server answers a good request after the bad one."""
    got = client.predict(api_name="/list_atlases")
    assert got[0]["name"] == folder.rsplit("/", 1)[-1]


