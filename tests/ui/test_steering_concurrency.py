"""Many visitors steer at once: the running app (gradio_client) over the tiny atlas.

Each greedy request sent together with 19 others must give exactly what it gives alone,
requests with different features must differ, and bad input must be a clear error that
leaves the app serving."""

import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from gradio_client import Client

import app
from sae_core.steer import generation
from tests import browser

PROMPTS = ["the cat sat on the mat", "a dog ran on the mat .", "Paris is big , the cat"]


class InFlight:
    """Counts generations running at once (seen at every decoding step)."""

    def __init__(self):
        self.now = self.peak = 0
        self.lock = threading.Lock()

    def wrap(self, generate):
        def counted(*args, **kwargs):
            def step(_logits):
                time.sleep(0.01)  # a slower model: lets concurrent requests overlap
                with self.lock:
                    self.peak = max(self.peak, self.now)

            with self.lock:
                self.now += 1
            try:
                return generate(*args, **kwargs, on_step=step)
            finally:
                with self.lock:
                    self.now -= 1
        return counted


@pytest.fixture(scope="module")
def served(tiny_atlas):
    with browser.served(app.build_app(tiny_atlas)) as url:
        client = Client(f"{url}/", verbose=False)
        yield client, str(tiny_atlas), url
        client.close()


def _text(highlighted) -> str:
    """The plain text of a HighlightedText value as the client returns it."""
    return "".join(part["token"] for part in highlighted)


def _requests(folder: str) -> list[tuple]:
    """(folder, prompt, layer, feature, strength, mode, positions, extra, max tokens,
    temperature, seed): mixed layers, features, modes, positions and extra features."""
    reqs = []
    for i in range(20):
        mode = "clamp" if i % 5 == 4 else "add"
        positions = "generated" if i % 3 == 2 else "all"
        extra = "2:7:-1.5" if i % 7 == 3 else ""
        reqs.append((folder, PROMPTS[i % 3], i % 3, (9 * i) % 64, 1.0 + 0.25 * (i % 4), mode,
                     positions, extra, 10 + 2 * (i % 3), 0, i))
    return reqs


def test_concurrent_requests_equal_their_solo_runs(served, monkeypatch):
    client, folder, _ = served
    reqs = _requests(folder)
    alone = [client.predict(*r, api_name="/steer") for r in reqs]
    counter = InFlight()
    monkeypatch.setattr(generation, "generate", counter.wrap(generation.generate))
    jobs = [client.submit(*r, api_name="/steer") for r in reqs]
    together = [job.result(timeout=120) for job in jobs]
    assert counter.peak >= 2  # requests really ran at the same time
    for r, solo, both in zip(reqs, alone, together, strict=True):
        assert both[:2] == solo[:2], r  # the texts; the notes hold timings
    # Same prompt, different features: the steered texts differ, the unsteered ones agree.
    by_prompt = {}
    for r, (plain, steered, _notes) in zip(reqs, together, strict=True):
        by_prompt.setdefault(r[1], []).append((plain, steered))
    for outs in by_prompt.values():
        plain = {_text(o[0]) for o in outs}
        steered = {_text(o[1]) for o in outs}
        assert len(plain) == 1 and len(steered) > len(outs) // 2, outs


def _raw_call(base: str, data: list) -> str:
    """POST to the steering endpoint as plain JSON (NaN allowed, which gradio_client refuses
    to send) and return the server's event stream."""
    body = json.dumps({"data": data})  # writes NaN / Infinity literals
    r = httpx.post(f"{base}/gradio_api/call/steer", content=body,
                   headers={"content-type": "application/json"}, timeout=30)
    r.raise_for_status()
    return httpx.get(f"{base}/gradio_api/call/steer/{r.json()['event_id']}", timeout=60).text


def test_bad_input_is_a_clear_error_and_the_app_keeps_serving(served):
    client, folder, base = served
    good = (folder, PROMPTS[0], 1, 3, 1.0, "add", "all", "", 8, 0, 0)
    for value, match in ((math.nan, "strength must be a number from -20 to 20, got nan"),
                         (math.inf, "greater than maximum")):
        args = list(good)
        args[4] = value
        events = _raw_call(base, args)
        assert "event: error" in events and match in events, events
    bad = {
        "greater than maximum": (4, 1e6),
        "prompt": (1, "   "),
        "feature 999": (3, 999),
        "not in this SAE set": (2, 12),
        "layer:feature:strength": (7, "1:2"),
        "maximum": (8, 100_000),
    }
    with ThreadPoolExecutor(4) as pool:
        futures = {}
        for match, (i, value) in bad.items():
            args = list(good)
            args[i] = value
            futures[match] = pool.submit(client.predict, *args, api_name="/steer")
        for match, fut in futures.items():
            with pytest.raises(Exception, match=match):
                fut.result(timeout=60)
    plain, _steered, notes = client.predict(*good, api_name="/steer")
    assert plain and "layer 1 feature 3" in notes


def test_light_events_answer_while_generations_hold_every_slot(served, monkeypatch):
    """Generations held (every steering slot taken, more queued): the live view and the
    layer map still answer, so light events do not wait behind generations."""
    client, folder, _ = served
    go, started = threading.Event(), threading.Semaphore(0)
    real = generation.generate

    def held(*args, **kwargs):
        started.release()
        go.wait(120)
        return real(*args, **kwargs)

    monkeypatch.setattr(generation, "generate", held)
    jobs = [client.submit(*r, api_name="/steer") for r in _requests(folder)[:6]]
    try:
        assert started.acquire(timeout=60)  # a generation holds its slot
        for kwargs, endpoint in ((dict(text="the cat sat on the mat"), "/features_on_text"),
                                 (dict(task="pos"), "/layer_map")):
            light = client.submit(atlas=folder, **kwargs, api_name=endpoint)
            assert light.result(timeout=60)  # answered while every generation is held
        assert not go.is_set()
    finally:
        go.set()
    assert all(job.result(timeout=120) for job in jobs)
