"""The Steering tab in a real browser: it opens simple, and the steered box shows text while
the generation is still running (held mid-way here), then the whole texts with their notes."""

import threading

from playwright.sync_api import expect

import app
from sae_core.steer import generation
from tests.browser import browser_page, needs_chromium, served

pytestmark = needs_chromium


def test_the_steered_box_shows_text_before_the_generation_ends(tiny_atlas, monkeypatch):
    go, held = threading.Event(), threading.Event()
    real = generation.generate

    def held_after_three(*args, on_tokens=None, **kwargs):
        def step(rows):
            on_tokens(rows)
            if len(rows[1]) == 3:  # three tokens written: wait for the page to show them
                held.set()
                go.wait(60)

        return real(*args, on_tokens=step if on_tokens else None, **kwargs)

    monkeypatch.setattr(generation, "generate", held_after_three)
    with served(app.build_app(tiny_atlas)) as url, browser_page(url) as page:
        page.get_by_role("tab", name="Steering").click()
        # the tab opens simple: one strength and "Write both"; the rest under More controls
        expect(page.get_by_label("Strength (x the layer's typical size)").first).to_be_visible()
        assert page.get_by_label("Feature", exact=True).locator("visible=true").count() == 0
        page.get_by_role("button", name="Write both").click()
        assert held.wait(60)
        written = page.locator("#steer-steered .token")  # the written text's spans
        expect(written.first).to_be_visible(timeout=10_000)  # text before the end
        expect(page.get_by_text("Writing both texts")).to_be_visible()
        go.set()
        expect(page.get_by_text("in one batch")).to_be_visible(timeout=30_000)
