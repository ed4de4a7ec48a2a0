"""The bad-input matrix of the running app, through its named API endpoints: bad input gets a
clear message that names the field, any other failure a plain "Something went wrong" that
hides its text, and the server answers the next request. NaN, infinity and lone surrogates,
which gradio_client refuses to send, go in as raw JSON over HTTP. The tabs' own callbacks:
test_bad_input_callbacks.py."""

import json
import logging

import gradio as gr
import httpx
import pytest
import torch
from gradio_client.exceptions import AppError

from tests.counts import count
from tests.ui.bad_input_helpers import BIG, serve, still_answers
from ui.serving import errors


@pytest.fixture(scope="module")
def served(tiny_atlas):
    """(client, base URL, atlas folder): one server for the module's cases."""
    for client, base, _ in serve(tiny_atlas):
        yield client, base, str(tiny_atlas)


# (endpoint, keyword arguments, the message's pattern: it names the field)
BAD_API = [
    ("/features_on_text", dict(text=""), "text must be a non-empty"),
    ("/features_on_text", dict(text=" \n\t "), "text must be a non-empty"),
    ("/features_on_text", dict(text=BIG), "text is 100,000 characters"),
    ("/features_on_text", dict(text=None), "text must be a non-empty"),
    ("/features_on_text", dict(text=["the"]), "text must be a non-empty"),
    ("/features_on_text", dict(text={"a": 1}), "text must be a non-empty"),
    ("/features_on_text", dict(text="the cat", top=-1), "top must be a whole number"),
    ("/features_on_text", dict(text="the cat", top=1.5), "top must be a whole number"),
    ("/features_on_text", dict(text="the cat", top="three"), "top must be a whole number"),
    ("/features_on_text", dict(text="the cat", top="0x10"), "top must be a whole number"),
    ("/features_on_text", dict(text="the cat", top=" 9 "), "top must be a whole number from 1"),
    ("/feature_page", dict(layer=1, feature="1e309"), "feature must be a whole number"),
    ("/steer_text", dict(prompt="the", layer=1, feature=0, strength=""), "strength must"),
    ("/features_on_text", dict(text="the cat", top=10**30), "top must be a whole number"),
    ("/feature_page", dict(atlas="../../etc/passwd", layer=1, feature=0), "Unknown SAE set"),
    ("/feature_page", dict(atlas="/etc/passwd", layer=1, feature=0), "Unknown SAE set"),
    ("/feature_page", dict(atlas=123, layer=1, feature=0), "Unknown SAE set"),
    ("/feature_page", dict(atlas=["x"], layer=1, feature=0), "Unknown SAE set"),
    ("/feature_page", dict(layer=-1, feature=0), "layer must be a whole number"),
    ("/feature_page", dict(layer=10**12, feature=0), "layer must be a whole number"),
    ("/feature_page", dict(layer=None, feature=0), "layer must be a whole number"),
    ("/feature_page", dict(layer="one", feature=0), "is not a layer"),
    ("/feature_page", dict(layer=1, feature=None), "feature must be a whole number"),
    ("/feature_page", dict(layer=1, feature="abc"), "feature must be a whole number"),
    ("/feature_page", dict(layer=1, feature=[1]), "feature must be a whole number"),
    ("/feature_page", dict(layer=1, feature=10**30), "feature must be a whole number"),
    ("/steer_text", dict(prompt="the", layer=1, feature=0, strength=1e300), "strength must"),
    ("/steer_text", dict(prompt="the", layer=1, feature=0, strength=-25), "strength must"),
    ("/steer_text", dict(prompt="the", layer=1, feature=0, max_new_tokens=0), "max_new_tokens"),
    ("/steer_text", dict(prompt="the", layer=1, feature=0, max_new_tokens=1.5),
     "max_new_tokens"),
    ("/steer_text", dict(prompt="", layer=1, feature=0), "prompt must be a non-empty"),
    ("/steer_text", dict(prompt=BIG, layer=1, feature=0), "prompt is 100,000 characters"),
    ("/steer_text", dict(prompt=None, layer=1, feature=0), "prompt must be a non-empty"),
    ("/steer_text", dict(prompt="the", layer=7, feature=0), "layer 7 is not in this SAE set"),
    ("/find_steering", dict(concept=None), "concept must be a non-empty"),
    ("/find_steering", dict(concept=BIG), "concept is 100,000 characters"),
    ("/find_steering", dict(concept="cat", related_words=5), "related_words must be a string"),
    ("/find_steering", dict(concept="cat", related_words=["a"]), "related_words must be a"),
    ("/find_steering", dict(concept="cat", related_words=",".join(f"w{i}" for i in range(30))),
     "at most 24"),
    ("/layer_map", dict(task=None), "task must be one of"),
    ("/layer_map", dict(task="../../etc"), "task must be one of"),
    ("/layer_map", dict(threshold=-1), "threshold must be"),
    ("/layer_map", dict(min_support=-1), "min_support must be"),
    ("/layer_map", dict(min_support=1.5), "min_support must be"),
    ("/layer_map", dict(min_lift=1e300), "min_lift must be"),
]


@pytest.mark.parametrize(("endpoint", "kwargs", "message"), BAD_API,
                         ids=[f"{e}-{i}" for i, (e, _, _) in enumerate(BAD_API)])
def test_api_bad_input_is_a_clear_error(served, endpoint, kwargs, message):
    client, _, folder = served
    count("bad-input cases tried")
    with pytest.raises(AppError, match=message):
        client.predict(**{"atlas": "", **kwargs}, api_name=endpoint)
    still_answers(client, folder)


@pytest.mark.parametrize("text", ["the cat 🐱🙂 sat", "the cat مرحبا שלום sat",
                                  "the\x00 cat\x07 sat\x1b\r\n"], ids=["emoji", "rtl", "control"])
def test_api_reads_strange_text(served, text):
    client, _, _ = served
    count("bad-input cases tried")
    got = client.predict(atlas="", text=text, top=2, api_name="/features_on_text")
    assert got["tokens"] and "".join(t["token"] for t in got["tokens"]) == got["text"]
    assert got["text"].startswith("the") and "\x00" not in got["text"]
    out = client.predict(atlas="", prompt=text, layer=1, feature=3, strength=0.5,
                         max_new_tokens=2, api_name="/steer_text")
    assert isinstance(out["unsteered"], str) and isinstance(out["steered"], str)


def test_api_reads_numbers_sent_as_text(served):
    """A number sent as text (a form, a JSON client) reads as that number: the same answer."""
    client, _, _ = served
    count("bad-input cases tried")
    plain = client.predict(atlas="", text="the cat", top=2, api_name="/features_on_text")
    assert client.predict(atlas="", text="the cat", top=" 2 ",
                          api_name="/features_on_text") == plain
    args = [dict(feature=3, strength=0.5, max_new_tokens=2),
            dict(feature="3", strength=" .5", max_new_tokens="2.0")]
    a, b = (client.predict(atlas="", prompt="the", layer=1, **kw, api_name="/steer_text")
            for kw in args)
    assert (b["feature"], b["strength"]) == (3, 0.5)
    assert (a["unsteered"], a["steered"]) == (b["unsteered"], b["steered"])


def raw_call(base: str, endpoint: str, body: str) -> tuple[str, str]:
    """(event, data) of one call sent as a raw JSON body (NaN, Infinity and lone surrogates
    are not JSON that gradio_client sends)."""
    posted = httpx.post(f"{base}/gradio_api/call/{endpoint}", content=body,
                        headers={"content-type": "application/json"}, timeout=60)
    if posted.status_code != 200:
        return "http", f"{posted.status_code} {posted.text}"
    event_id = posted.json()["event_id"]
    text = httpx.get(f"{base}/gradio_api/call/{endpoint}/{event_id}", timeout=120).text
    events = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("event")]
    data = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("data")]
    return events[-1], data[-1]


# (endpoint, raw "data" list, the event and a pattern its data must hold)
RAW = [
    ("features_on_text", '["", "the cat", NaN]', "error", "top must be a whole number"),
    ("features_on_text", '["", "the cat", Infinity]', "error", "top must be a whole number"),
    ("features_on_text", '["", "the cat", -Infinity]', "error", "top must be a whole number"),
    ("features_on_text", '["", "the \\ud800 cat", 2]', "complete", '"tokens"'),
    ("features_on_text", '["", "\\udfff", 2]', "error", "empty"),
    ("steer_text", '["", "the", 1, 0, NaN, 4]', "error", "strength must be a number"),
    ("steer_text", '["", "the \\ud800 cat", 1, 3, 0.5, 2]', "complete", '"steered"'),
    ("feature_page", '["", NaN, 0]', "error", "layer must be a whole number"),
    ("feature_page", '["", 1, Infinity]', "error", "feature must be a whole number"),
    ("layer_map", '["", "pos", NaN, 20, 2.0]', "error", "threshold must be a number"),
    ("layer_map", '["", "pos", 0.5, 20, NaN]', "error", "min_lift must be a number"),
]


@pytest.mark.parametrize(("endpoint", "data", "event", "pattern"), RAW,
                         ids=[f"{e}-{i}" for i, (e, *_) in enumerate(RAW)])
def test_raw_json_nan_inf_and_surrogates(served, endpoint, data, event, pattern):
    client, base, folder = served
    count("bad-input cases tried")
    got_event, got = raw_call(base, endpoint, '{"data": ' + data + "}")
    assert got_event == event and pattern in got, (got_event, got[:300])
    still_answers(client, folder)


def boom(kind: str):
    """A callable that fails as library code can fail, not with a ValueError."""
    def fail(*a, **kw):
        if kind == "torch":
            return torch.zeros(2, 3) @ torch.zeros(2, 3)  # a real shape error from torch
        if kind == "unicode":
            return "\ud800 /srv/secret".encode("utf-8")
        raise {"runtime": RuntimeError, "key": KeyError, "index": IndexError,
               "os": OSError, "memory": MemoryError}[kind]("/srv/secret/path")
    return fail


KINDS = ["runtime", "key", "index", "os", "unicode", "torch", "memory"]
TYPES = {"runtime": "RuntimeError", "key": "KeyError", "index": "IndexError", "os": "OSError",
         "unicode": "UnicodeEncodeError", "torch": "RuntimeError", "memory": "MemoryError"}
# (where the library function is looked up, endpoint, arguments, what the message says)
FAILING = [
    ("ui.api.live_view", "/features_on_text", ("", "the cat", 2), "reading the text"),
    ("ui.api.read_page", "/feature_page", ("", 1, 5), "reading the feature page"),
    ("ui.api.side_by_side", "/steer_text", ("", "the", 1, 3, 0.5, 2), "writing the texts"),
    ("ui.live.tab.live_view", "/run_live", (None, "the cat"), "reading the text"),
    ("ui.search.tab.search_text", "/run_search", (None, "the cat", "norm"), "searching the text"),
    ("ui.steering.write.side_by_side", "/steer",
     (None, "the", 1, 3, 0.5, "add", "all", "", 4, 0, 0), "writing the texts"),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("target", "endpoint", "args", "doing"), FAILING,
                         ids=[f[1] for f in FAILING])
def test_other_failures_are_plain_messages(served, monkeypatch, caplog, kind, target,
                                           endpoint, args, doing):
    """Not a bare "Error": what was being done, that nothing changed, the error's type, and
    none of its text (a path here); the traceback goes to the log."""
    client, _, folder = served
    count("bad-input cases tried")
    monkeypatch.setattr(target, boom(kind))
    args = tuple(folder if a is None else a for a in args)
    with caplog.at_level(logging.ERROR, logger="sae_atlas.ui"), \
            pytest.raises(AppError) as caught:
        client.predict(*args, api_name=endpoint)
    message = str(caught.value)
    assert f"Something went wrong while {doing}; nothing was changed. ({TYPES[kind]})" \
        in message and "secret" not in message
    assert any(r.name == "sae_atlas.ui" and r.exc_info and r.exc_info[0].__name__ == TYPES[kind]
               for r in caplog.records)  # the traceback is logged
    monkeypatch.undo()
    still_answers(client, folder)



def test_errors_helper_maps_each_kind(caplog):
    """gr.Error passes unchanged; ValueError keeps its (cut) message; others are plain."""
    def fails(err):
        @errors.friendly("doing X")
        def fn(a, *, b=1):
            raise err
        return fn

    with pytest.raises(gr.Error) as caught:
        fails(gr.Error("as is"))(1)
    assert caught.value.message == "as is"
    with pytest.raises(gr.Error) as caught:
        fails(ValueError("v" * 5000))(1)
    assert caught.value.message.startswith("vvv") and len(caught.value.message) <= 600
    with caplog.at_level(logging.ERROR, logger="sae_atlas.ui"), \
            pytest.raises(gr.Error, match=r"while doing X; nothing was changed. \(KeyError\)"):
        fails(KeyError("/srv/x"))(1)
    assert "Traceback" in caplog.text or caplog.records[-1].exc_info
    assert json.dumps(errors.text_arg(None, "f", 3)) == '""'
    with pytest.raises(gr.Error, match="f is 4 characters long; the limit is 3"):
        errors.text_arg("abcd", "f", 3)



def test_not_ready_is_an_info_for_the_page_and_an_error_for_a_program():
    """No SAE set yet (errors.NotReady): the page gets an info toast and its outputs kept;
    gradio_client and MCP (header x-gradio-user) get the same words as an error."""
    from types import SimpleNamespace

    from gradio.context import LocalContext

    @errors.friendly("testing")
    def callback():
        raise errors.NotReady("The page will appear here")

    assert callback() == gr.skip()
    for user, raises in (("api", True), ("mcp", True), ("app", False), (None, False)):
        headers = {"x-gradio-user": user} if user else {}
        token = LocalContext.request.set(SimpleNamespace(headers=headers))
        try:
            if raises:
                with pytest.raises(gr.Error, match="will appear here"):
                    callback()
            else:
                assert callback() == gr.skip()
        finally:
            LocalContext.request.reset(token)
