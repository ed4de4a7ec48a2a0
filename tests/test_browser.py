"""The app in a real browser (Debian chromium via playwright), over a tiny atlas."""

import shutil
import socket

import pytest

import app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not shutil.which("chromium"), reason="needs Debian chromium")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def page(tiny_atlas):
    from playwright.sync_api import sync_playwright

    port = _free_port()
    demo = app.build_app(tiny_atlas)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                quiet=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.goto(f"http://127.0.0.1:{port}", wait_until="load")
        yield page
        browser.close()
    demo.close()


def test_layer_map_heatmap_follows_the_threshold(page):
    page.get_by_role("tab", name="Layer map").click()
    title = page.locator(".gtitle").first
    title.wait_for(timeout=15_000)
    assert "≥ 0.80" in title.text_content()
    box = page.get_by_label("Consistency threshold").locator("visible=true").last
    box.fill("1")
    box.press("Enter")
    js = ("() => [...document.querySelectorAll('.gtitle')]"
          ".some(t => t.textContent.includes('≥ 1.00'))")
    page.wait_for_function(js, timeout=15_000)


def test_saes_tab_lists_layers(page):
    page.get_by_role("tab", name="SAEs").click()
    page.get_by_text("layers.2").first.wait_for(timeout=15_000)
