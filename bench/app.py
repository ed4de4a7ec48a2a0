"""The app as a visitor meets it: launch to first page, and each tab's main interaction.

1. startup_s: `python app.py` with the default atlas built, from process start to the first
   page served (HTTP 200 on /).
2. first_page_s: the same from a fresh folder with no atlas (the default atlas starts
   building in the background; the page must not wait for it).
3. Baseline in the same run: a one-Markdown Gradio app launched the same way (the cost of
   Python, torch-free Gradio start-up and the first page), and the ratios to it.
4. slowest_tab_ms: the main interaction of every tab against the running app through
   gradio_client (median of 3 after one warm-up), the slowest of them. The Tour's example
   is a click chain with no API endpoint: it is timed in Chromium, from the click to the
   steered text on screen.

    flock /tmp/bench.lock .venv/bin/python bench/app.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from gradio_client import Client

ROOT = Path(__file__).resolve().parents[1]
PLAIN_APP = ("import gradio as gr\nwith gr.Blocks() as demo:\n    gr.Markdown('hello')\n"
             "demo.launch(server_name='127.0.0.1', server_port={port})\n")
TEXT = ("The old sailor walked along the beach in Paris, thinking about the price of gold "
        "and the songs his mother sang.")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], cwd: Path, port: int) -> tuple[subprocess.Popen, float]:
    """(process, seconds from its start to the first page served)."""
    env = os.environ | {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
                        "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{args} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                if r.status == 200:
                    return proc, time.perf_counter() - t0
        except OSError:
            time.sleep(0.05)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(30)


def plain_first_page() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        (Path(tmp) / "plain.py").write_text(PLAIN_APP.format(port=port))
        proc, seconds = launch(["plain.py"], Path(tmp), port)
        stop(proc)
        return seconds


def empty_first_page() -> float:
    """A folder with no atlas: only the converted model is shared (not an atlas)."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "checkpoints").mkdir()
        (Path(tmp) / "checkpoints" / "models").symlink_to(ROOT / "checkpoints" / "models")
        port = free_port()
        proc, seconds = launch([str(ROOT / "app.py"), "--port", str(port)], Path(tmp), port)
        stop(proc)
        return seconds


def interactions(atlas: str) -> dict[str, tuple[str, tuple]]:
    """tab -> (api name, arguments) of its main interaction."""
    return {
        "Layer map": ("layer_map", (atlas, "pos")),
        "Features": ("feature_page", (atlas, 15, 7)),
        "SAEs": ("atlas_summary", (atlas,)),
        "Steering": ("steer_text", (atlas, "Describe your ideal house.", 11, 7, 0.4, 48)),
        "Live view": ("features_on_text", (atlas, TEXT)),
        "Search": ("run_search", (atlas, "ocean", "norm")),
    }


def time_tabs(url: str, atlas: str, repeats: int = 3) -> dict[str, float]:
    client = Client(url, verbose=False)
    times = {}
    for tab, (name, args) in interactions(atlas).items():
        client.predict(*args, api_name=f"/{name}")  # warm-up: loads the model, the index
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            client.predict(*args, api_name=f"/{name}")
            runs.append(1000 * (time.perf_counter() - t0))
        times[tab] = statistics.median(runs)
        print(f"{tab:10s} /{name:17s} median {times[tab]:8.1f} ms  (runs {runs})", flush=True)
    return times


def time_tour(url: str, repeats: int = 3) -> float:
    """Median ms from clicking "Run the example" to the steered text shown (after a warm-up)."""
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]
    runs = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        for i in range(repeats + 1):
            page = browser.new_page()
            page.goto(url, wait_until="load")
            page.get_by_role("button", name="Run the example").wait_for(timeout=60_000)
            t0 = time.perf_counter()
            page.get_by_role("button", name="Run the example").click()
            page.locator("#tour-steered").wait_for(state="visible", timeout=120_000)
            if i:
                runs.append(1000 * (time.perf_counter() - t0))
            page.close()
        browser.close()
    print(f"{'Tour':10s} {'(click chain)':18s} median {statistics.median(runs):8.1f} ms  "
          f"(runs {runs})", flush=True)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atlas", default="checkpoints/atlas/default")
    args = parser.parse_args()
    plain_s = plain_first_page()
    print(f"plain Gradio app: first page after {plain_s:.2f} s", flush=True)
    none_s = empty_first_page()
    print(f"no atlas (building in the background): first page after {none_s:.2f} s", flush=True)
    port = free_port()
    proc, built_s = launch(["app.py", "--port", str(port), "--no-build"], ROOT, port)
    print(f"built atlas: first page after {built_s:.2f} s", flush=True)
    try:
        times = {"Tour": time_tour(f"http://127.0.0.1:{port}/"),
                 **time_tabs(f"http://127.0.0.1:{port}/", args.atlas)}
    finally:
        stop(proc)
    slowest = max(times, key=times.get)
    print(f"slowest tab: {slowest} ({times[slowest]:.0f} ms)")
    print(f"RESULT startup_s={built_s:.2f} first_page_s={none_s:.2f} "
          f"slowest_tab_ms={times[slowest]:.0f} slowest_tab={slowest.replace(' ', '_')} "
          f"plain_gradio_s={plain_s:.2f} startup_vs_plain={built_s / plain_s:.2f} "
          f"first_page_vs_plain={none_s / plain_s:.2f}")


if __name__ == "__main__":
    main()
