"""Many visitors at once: `--threads` clients (one `gradio_client.Client` each, in threads)
send mixed requests (live view, feature pages, search, steering) to the app served in this
process for `--seconds`, in rounds, and check that every request is answered; that each
answer equals the same request answered alone first (strings, ints and keys exactly, floats
within FLOAT_TOL relative or absolute, steer_text's `seconds` timing dropped; bitwise-equal
answers are counted too); that no hook of ours is left on the model (`hooks_left`); and that
memory is flat (VmRSS after the last round minus after round 1, the warm-up round).
Latency is reported per kind: feature pages (`page_p95_ms`, light events that must not wait
behind generations) and generations (`generate_p95_ms`). Before the load, a lone visitor
asks the Steering tab's streaming endpoint (`/steer`) for 48 tokens a few times: the time
from the submit to the first streamed text is `first_token_ms` (median).

The queue is the app's local one (`queue_options(False)`): unbounded, so no request is
refused (a refusal would count as an error); each tab callback runs one at a time, the API's
model runs 2 at once. Latency runs from the submit to the answer, queue wait included.

    flock /tmp/bench.lock .venv/bin/python bench/load.py [--atlas DIR] [--seconds 60]
    flock /tmp/bench.lock .venv/bin/python bench/load.py --seconds 1500 --rounds 5  # issue 30
    .venv/bin/python bench/load.py --smoke      # the tests' tiny random model

Atlas: `--atlas`, else checkpoints/atlas/default, else a small one of the embedded model built
into checkpoints/atlas/load-small; a missing feature index is built first (`--index-tokens`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))  # load_atlas; after ROOT: bench/app.py is not app.py
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gradio_client import Client  # noqa: E402
from load_atlas import choose_atlas, with_index  # noqa: E402

FLOAT_TOL = 1e-4
RESULT_KEYS = ("requests", "errors", "mismatches", "page_p95_ms", "generate_p95_ms",
               "first_token_ms", "rss_growth_mb", "p50_ms", "p95_ms", "hooks_left", "exact")
FIRST_TOKEN_TRIES = 5
REQUEST_TIMEOUT_S = 600
TEXTS = ("The old sailor walked along the beach in Paris, thinking about the price of gold.",
         "def parse(path): return open(path).read().split()",
         "She smiled, because the dog had finally learned to sit.",
         "In 1969 the crew landed on the Moon and planted a flag.")
PROMPTS = ("Describe your ideal house.", "Write a short poem about rain.",
           "What should I cook tonight?")
TINY_TEXTS = ("the cat sat on the mat .", "Paris is big , a dog ran", "a big cat ran on a mat",
              "the dog is on the mat . Paris")


@dataclass(frozen=True)
class Call:
    kind: str  # live, page, search or steer
    api_name: str
    args: tuple


@dataclass(frozen=True)
class Outcome:
    kind: str
    what: str  # the call, for the report
    ms: float
    error: str | None
    match: bool
    exact: bool


def calls_for(folder: str, layers: list[int], d_sae: int, texts: tuple[str, ...],
              prompts: tuple[str, ...], new_tokens: int) -> list[Call]:
    """A fixed set of distinct requests, every kind of work a visitor asks for."""
    pick = [layers[i * len(layers) // 6] for i in range(6)]
    out = [Call("live", "/features_on_text", ("", text, 3)) for text in texts]
    out += [Call("page", "/feature_page", ("", layer, (i * 977 + 13) % d_sae))
            for i, layer in enumerate(pick)]
    out += [Call("search", "/run_search", (folder, text, "norm")) for text in texts[:3]]
    out += [Call("steer", "/steer_text", ("", p, pick[i + 2], (i * 331 + 7) % d_sae, 0.4,
                                          new_tokens)) for i, p in enumerate(prompts)]
    return out


def comparable(call: Call, result: object) -> object:
    """The answer as plain JSON, timings dropped."""
    data = json.loads(json.dumps(result, default=str))
    if call.kind == "steer":
        data.pop("seconds", None)
    return data


def same(a: object, b: object, tol: float = FLOAT_TOL) -> bool:
    """Equal JSON, floats within `tol` (relative or absolute)."""
    if isinstance(a, float) or isinstance(b, float):
        ok = isinstance(a, int | float) and isinstance(b, int | float)
        return ok and math.isclose(a, b, rel_tol=tol, abs_tol=tol)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y, tol) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def visitor(client: Client, calls: list[Call], refs: list, start: int, deadline: float,
            out: list[Outcome]) -> None:
    """One visitor: the calls in turn from `start` until `deadline` (then its last one ends)."""
    i = start
    while time.monotonic() < deadline:
        call = calls[i % len(calls)]
        what = f"{call.api_name}{call.args}"[:120]
        i += 1
        t0 = time.perf_counter()
        try:
            got = client.submit(*call.args, api_name=call.api_name).result(REQUEST_TIMEOUT_S)
            data, error = comparable(call, got), None
        except Exception as err:  # every failure is counted; none stops the load
            data, error = None, f"{type(err).__name__}: {err}"[:200]
        ref = refs[calls.index(call)]
        out.append(Outcome(call.kind, what, 1000 * (time.perf_counter() - t0), error,
                           error is None and same(data, ref), data == ref))


def rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024  # kB


def percentiles(outs: list[Outcome], kinds: tuple[str, ...] | None = None) -> list[float]:
    """The 1st..99th percentiles of the answered requests' latency (of `kinds` only)."""
    ms = [o.ms for o in outs if o.error is None and (kinds is None or o.kind in kinds)]
    if len(ms) < 2:
        return (ms or [math.nan]) * 99
    return statistics.quantiles(ms, n=100, method="inclusive")


def summary(outs: list[Outcome]) -> dict:
    q = percentiles(outs)
    kinds = {k: sum(o.kind == k for o in outs) for k in ("live", "page", "search", "steer")}
    return {"requests": len(outs), "errors": sum(o.error is not None for o in outs),
            "mismatches": sum(o.error is None and not o.match for o in outs),
            "exact": sum(o.exact for o in outs),
            "p50_ms": round(q[49]), "p95_ms": round(q[94]), "kinds": kinds,
            "page_p95_ms": round(percentiles(outs, ("page",))[94]),
            "generate_p95_ms": round(percentiles(outs, ("steer",))[94])}


def first_token_ms(url: str, steer_args: tuple, tries: int = FIRST_TOKEN_TRIES) -> float:
    """Median over `tries` lone requests to the streaming `/steer` endpoint: ms from the
    submit to its first streamed update (the first token of both texts)."""
    client = Client(url, verbose=False)
    times = []
    try:
        for _ in range(tries):
            t0 = time.perf_counter()
            job = client.submit(*steer_args, api_name="/steer")
            next(iter(job))  # the first update; the rest streams on
            times.append(1000 * (time.perf_counter() - t0))
            job.result(REQUEST_TIMEOUT_S)
    finally:
        client.close()
    return round(statistics.median(times))


def serve(folder: Path):
    """(demo, url) of the app over `folder`, launched in this process as app.py does."""
    import socket

    import app
    from ui.serving.serve import cap_malloc_arenas, queue_options

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cap_malloc_arenas()  # as app.py does
    demo = app.build_app(folder).queue(**queue_options(False))
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                quiet=True)
    return demo, f"http://127.0.0.1:{port}/"


def reference_answers(url: str, calls: list[Call]) -> list[object]:
    """Each call's answer when it runs alone, one after another."""
    client = Client(url, verbose=False)
    try:
        return [comparable(c, client.predict(*c.args, api_name=c.api_name)) for c in calls]
    finally:
        client.close()


def load_round(clients: list[Client], calls: list[Call], refs: list, seconds: float
               ) -> list[Outcome]:
    """Every client sends requests from its own place in `calls` for `seconds`."""
    per_client: list[list[Outcome]] = [[] for _ in clients]
    deadline, n = time.monotonic() + seconds, len(clients)
    threads = [threading.Thread(target=visitor, args=(c, calls, refs, i * len(calls) // n,
                                                      deadline, out))
               for i, (c, out) in enumerate(zip(clients, per_client, strict=True))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [o for out in per_client for o in out]


def show_round(n: int, s: dict, rss: float, hooks: int) -> None:
    kinds = ", ".join(f"{k} {v}" for k, v in s["kinds"].items())
    print(f"round {n}: {s['requests']} requests ({kinds}), errors {s['errors']}, "
          f"mismatches {s['mismatches']} (bitwise equal {s['exact']}), "
          f"p50 {s['p50_ms']:.0f} ms, p95 {s['p95_ms']:.0f} ms (pages {s['page_p95_ms']}, "
          f"generations {s['generate_p95_ms']}), rss {rss:.1f} MB, hooks left {hooks}",
          flush=True)


def run(folder: Path, *, threads: int = 32, seconds: float = 60, rounds: int = 3,
        texts: tuple[str, ...] = TEXTS, new_tokens: int = 8) -> dict:
    """Serve `folder`, load it for `seconds` in `rounds`, return the totals."""
    from sae_core.activations import layer_of
    from sae_core.hooks import hooks_left
    from ui.serving import session

    loaded = session.open_atlas(folder)
    calls = calls_for(str(folder), sorted(map(layer_of, loaded.saes)),
                      min(s.cfg.d_sae for s in loaded.saes.values()), texts, PROMPTS, new_tokens)
    demo, url = serve(folder)
    clients = []
    try:
        t0 = time.perf_counter()
        refs = reference_answers(url, calls)
        print(f"{len(calls)} distinct requests answered alone in "
              f"{time.perf_counter() - t0:.1f} s; hooks left {hooks_left(loaded.lm)}", flush=True)
        steer = next(c for c in calls if c.kind == "steer").args
        first_ms = first_token_ms(url, (str(folder), steer[1], steer[2], steer[3], steer[4],
                                        "add", "all", "", 48, 0, 0))
        print(f"first streamed token, a lone visitor: {first_ms} ms (median of "
              f"{FIRST_TOKEN_TRIES})", flush=True)
        with ThreadPoolExecutor(threads) as pool:
            clients = list(pool.map(lambda _: Client(url, verbose=False), range(threads)))
        outs, rss = [], []
        for n in range(1, rounds + 1):
            got = load_round(clients, calls, refs, seconds / rounds)
            outs += got
            rss.append(rss_mb())
            show_round(n, summary(got), rss[-1], hooks_left(loaded.lm))
        errors = sorted({o.error for o in outs if o.error})
        for message in errors[:5]:
            print(f"error: {message}")
        for what in sorted({o.what for o in outs if o.error is None and not o.match})[:5]:
            print(f"mismatch: {what}")
    finally:
        with ThreadPoolExecutor(threads) as pool:  # each close waits up to 1 s
            list(pool.map(Client.close, clients))
        demo.close()
    return summary(outs) | {"rss_growth_mb": round(rss[-1] - rss[0], 1), "rss_mb": rss,
                            "hooks_left": hooks_left(loaded.lm), "first_token_ms": first_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, kind, default in (("--atlas", str, None), ("--seconds", float, 60),
                                ("--rounds", int, 3), ("--threads", int, 32),
                                ("--new-tokens", int, 8), ("--index-tokens", int, 65_536)):
        parser.add_argument(flag, type=kind, default=default, help=f"default: {default}")
    parser.add_argument("--smoke", action="store_true", help="the tests' tiny random model")
    args = parser.parse_args()
    args.atlas = args.atlas and str(Path(args.atlas).resolve())
    os.chdir(ROOT)  # the model cache and the atlas root are relative to the repository
    with tempfile.TemporaryDirectory() as scratch:
        folder, how = choose_atlas(args, Path(scratch))
        print(f"atlas: {how}", flush=True)
        with_index(folder, args.index_tokens)
        totals = run(folder, threads=args.threads, seconds=args.seconds, rounds=args.rounds,
                     texts=TINY_TEXTS if args.smoke else TEXTS, new_tokens=args.new_tokens)
    print(f"rss after each round (MB): {', '.join(f'{r:.1f}' for r in totals['rss_mb'])}")
    print("RESULT", " ".join(f"{k}={totals[k]}" for k in RESULT_KEYS), f"threads={args.threads}")
    if totals["errors"] or totals["mismatches"] or totals["hooks_left"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
