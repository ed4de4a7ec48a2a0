"""bench/load.py's logic, briefly, on the tiny atlas: 8 visitors at once, every kind of
request, answers compared with the same requests answered alone."""

import importlib.util
import sys
from pathlib import Path

from sae_core.explore.feature_index import ensure_feature_index
from tests.counts import count
from ui.serving import session

_spec = importlib.util.spec_from_file_location(
    "bench_load", Path(__file__).resolve().parents[2] / "bench" / "load.py")
load = sys.modules["bench_load"] = importlib.util.module_from_spec(_spec)  # for dataclasses
_spec.loader.exec_module(load)


def test_same_tells_answers_apart():
    ref = {"tokens": [{"token": "cat", "activation": 1.2345}], "steered": "a b", "n": 3}
    assert load.same(ref, {"tokens": [{"token": "cat", "activation": 1.23455}],
                           "steered": "a b", "n": 3})  # within FLOAT_TOL
    planted = [{"tokens": [{"token": "cat", "activation": 1.25}], "steered": "a b", "n": 3},
               {"tokens": [{"token": "cat", "activation": 1.2345}], "steered": "a c", "n": 3},
               {"tokens": [], "steered": "a b", "n": 3},
               {"tokens": [{"token": "cat", "activation": 1.2345}], "steered": "a b", "n": 4},
               {"tokens": [{"token": "cat", "activation": 1.2345}], "steered": "a b"},
               {"tokens": [{"token": "cat", "activation": "1.2345"}], "steered": "a b", "n": 3}]
    assert not any(load.same(ref, other) for other in planted)


def test_steer_timing_is_not_compared():
    call = load.Call("steer", "/steer_text", ())
    a, b = ({"steered": "x", "seconds": s} for s in (0.5, 2.0))
    assert load.comparable(call, a) == load.comparable(call, b) == {"steered": "x"}
    assert load.comparable(load.Call("page", "/feature_page", ()), (1, "y")) == [1, "y"]


def test_many_visitors_get_the_answers_they_get_alone(tiny_atlas):
    ensure_feature_index(tiny_atlas, lm=session.open_atlas(tiny_atlas).lm)
    totals = load.run(tiny_atlas, threads=8, seconds=4, rounds=2, texts=load.TINY_TEXTS,
                      new_tokens=4)
    count("load: concurrent requests answered", totals["requests"])
    assert all(n > 0 for n in totals["kinds"].values()), totals["kinds"]
    assert (totals["errors"], totals["mismatches"], totals["hooks_left"]) == (0, 0, 0)
    assert len(totals["rss_mb"]) == 2
    # per-kind latency and the lone visitor's first streamed update are measured
    assert totals["first_token_ms"] > 0 and totals["page_p95_ms"] > 0
    assert set(load.RESULT_KEYS) <= set(totals)
