"""Screenshots of the running app for the README (Debian chromium + playwright).

    python app.py --no-build &   # or make run
    python scripts/screenshot.py --url http://127.0.0.1:7860 --out docs
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:7860")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--tabs", nargs="*", default=["Layer map", "SAEs"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(args.url, wait_until="networkidle")
        for tab in args.tabs:
            page.get_by_role("tab", name=tab).click()
            page.wait_for_timeout(2500)  # let Plotly draw
            name = tab.lower().replace(" ", "_")
            page.screenshot(path=str(args.out / f"{name}.png"), full_page=True)
            print(f"wrote {args.out / f'{name}.png'}")
        browser.close()


if __name__ == "__main__":
    main()
