"""The Live view tab in a real browser, over the tiny atlas."""

import pytest

import app
from sae_core.explore.live import live_view
from tests.browser import browser_page, needs_chromium, served
from ui.serving import session

pytestmark = needs_chromium

TEXT = "Paris is big , the dog ran"


@pytest.fixture(scope="module")
def page(tiny_atlas):
    with served(app.build_app(tiny_atlas)) as url, browser_page(url) as page:
        yield page


def test_live_view_follows_the_text_and_a_row_click_chooses_its_feature(page, tiny_atlas):
    from playwright.sync_api import expect

    strongest = int(live_view(session.open_atlas(tiny_atlas), TEXT).top_idx_TLK[0, 0, 0])
    page.get_by_role("tab", name="Live view").click(timeout=30_000)
    page.locator(".gtitle", has_text="Strongest feature").wait_for(timeout=30_000)
    page.get_by_label("Text (up to 256 tokens are shown)").fill(TEXT)
    page.locator("g.ytick text", has_text="Paris").first.wait_for(timeout=30_000)
    # token 0 ("Paris"), layer 0, rank 1: the same feature as the core computes
    cell = page.locator("#live-token-table [role=gridcell][data-row='0'][data-col='1']")
    expect(cell).to_have_text(str(strongest), timeout=30_000)
    cell.click()
    page.get_by_text(f"Chosen: layer 0, feature {strongest}").first.wait_for(timeout=15_000)
