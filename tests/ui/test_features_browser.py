"""The Features tab in a real browser (Debian chromium via playwright), over the tiny atlas."""

import re

import pytest

import app
from sae_core.explore.feature_index import ensure_feature_index
from tests.browser import browser_page, needs_chromium, served
from ui.serving import session

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def page(tiny_atlas):
    ensure_feature_index(tiny_atlas, lm=session.open_atlas(tiny_atlas).lm)
    with served(app.build_app(tiny_atlas)) as url, browser_page(url) as page:
        yield page


HEADING = re.compile(r"Layer \d+, feature \d+")


def _heading(page):
    return page.locator("h3", has_text=HEADING).locator("visible=true").first


def test_feature_page_renders_and_steps(page):
    page.get_by_role("tab", name="Features").click(timeout=30_000)
    _heading(page).wait_for(timeout=30_000)
    # Snippets: one shaded span per token piece, each with its value on hover.
    spans = page.locator("span[title]")
    spans.first.wait_for(timeout=10_000)
    assert spans.count() > 10
    before = _heading(page).text_content()
    page.get_by_role("button", name="Next ▶").click()
    page.wait_for_function(
        "b => [...document.querySelectorAll('h3')].every(h => h.textContent !== b)", arg=before,
        timeout=15_000)
    assert _heading(page).text_content() != before


def test_out_of_range_feature_is_a_message(page):
    page.get_by_role("tab", name="Features").click(timeout=30_000)
    box = page.get_by_label("Feature").locator("visible=true").first
    box.fill("99999")
    box.press("Enter")
    page.get_by_text("out of range").first.wait_for(timeout=15_000)
    # The app is still up: a valid id renders again.
    box.fill("1")
    box.press("Enter")
    page.locator("h3", has_text=re.compile(r"feature 1$")).first.wait_for(timeout=15_000)
