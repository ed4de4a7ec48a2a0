"""The app in a real browser (Debian chromium via playwright), over a tiny atlas."""

import pytest

import app
from tests.browser import browser_page, needs_chromium, served

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def page(tiny_atlas):
    with served(app.build_app(tiny_atlas)) as url, browser_page(url) as page:
        yield page


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
