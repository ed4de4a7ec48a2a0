"""Screenshots of the running app for the README (Debian chromium + playwright), and the
time from a threshold change on the layer map to the redrawn heatmap, as a user sees it.

    python app.py --no-build &   # or make run
    python scripts/screenshot.py --url http://127.0.0.1:7860 --out docs

`--progress`: only the build progress panel of an app that is building (docs/build_progress.png).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

ACTIONS = {
    # tab -> (button to press first or None, seconds to let it compute and Plotly draw)
    "Tour": ("Run the example", 30),
    "Layer map": (None, 3),
    "Features": (None, 6),
    "Live view": (None, 8),
    "Search": ("Search by text", 8),
    "Steering": ("Write both", 20),
    "SAEs": (None, 3),
}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def time_the_layer_map(page) -> None:
    """From typing a threshold to the redrawn heatmap, as a user sees it."""
    page.get_by_role("tab", name="Layer map").click()
    page.locator(".gtitle").first.wait_for(timeout=30_000)
    box = page.get_by_label("Consistency threshold").locator("visible=true").last
    times = []
    for value in ("0.85", "0.9", "0.75", "0.8"):
        t0 = time.perf_counter()
        box.fill(value)
        box.press("Enter")
        page.wait_for_function(
            "v => [...document.querySelectorAll('.gtitle')]"
            ".some(t => t.textContent.includes('≥ ' + v))", arg=f"{float(value):.2f}")
        times.append(1000 * (time.perf_counter() - t0))
    print(f"threshold change -> heatmap redrawn: {', '.join(f'{t:.0f}' for t in times)} ms")
    print(f"RESULT threshold_update_ms={sorted(times)[len(times) // 2]:.0f}")


def use_the_finder(page) -> None:
    """The Steering tab's finder on a concept, its suggestion, then the baselines."""
    page.get_by_label("Concept").fill("castle")
    page.get_by_label("Related words").fill("king, queen, kingdom, throne")
    page.get_by_role("button", name="Find features").click()
    page.get_by_text("Suggested:").wait_for(timeout=180_000)
    page.get_by_role("button", name="Use the suggestion").click()
    page.wait_for_timeout(1000)
    page.get_by_role("button", name="Write the baselines").click()
    page.get_by_text("Difference of means at layer").wait_for(timeout=180_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:7860")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--tabs", nargs="*", default=list(ACTIONS))
    parser.add_argument("--progress", action="store_true", help="the build panel only")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(args.url, wait_until="load")
        if args.progress:
            page.get_by_text("tokens/s").first.wait_for(timeout=600_000)
            page.screenshot(path=str(args.out / "build_progress.png"),
                            clip={"x": 0, "y": 0, "width": 1400, "height": 520})
            print(f"wrote {args.out / 'build_progress.png'}")
            return
        if "Layer map" in args.tabs:
            time_the_layer_map(page)
        for tab in args.tabs:
            page.get_by_role("tab", name=tab).click()
            button, seconds = ACTIONS.get(tab, (None, 3))
            if tab == "Features":  # a feature that reads well: the ocean preset's feature
                layer = page.get_by_label("Layer").locator("visible=true").first
                layer.click()
                layer.fill("4")
                layer.press("Enter")
                page.wait_for_timeout(3000)
                box = page.get_by_label("Feature").locator("visible=true").first
                box.fill("3771")
                box.press("Enter")
            if tab == "Steering":
                use_the_finder(page)
            if button:
                page.wait_for_timeout(1000)
                page.get_by_role("button", name=button).click()
            page.wait_for_timeout(1000 * seconds)
            name = tab.lower().replace(" ", "_")
            page.screenshot(path=str(args.out / f"{name}.png"), full_page=True)
            print(f"wrote {args.out / f'{name}.png'}")
        browser.close()


if __name__ == "__main__":
    main()
