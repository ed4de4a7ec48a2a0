"""Serve first, build after, in a real browser: the app answers on a folder with no atlas,
shows the background build's progress, and the tabs fill in without a restart. Public
mode: no push control, and its endpoints refuse what strangers must not do."""

import json
import re
import threading

import pytest
from gradio_client import Client

import app
from sae_core.config import BuildConfig, TrainConfig
from sae_core.jobs.stages import BuildJob
from sae_core.jobs.worker import BuildWorker
from tests.browser import browser_page, needs_chromium, served
from tests.conftest import WORDS
from ui.serving import builds, public, session

pytestmark = needs_chromium
TABS = ("Tour", "Layer map", "Features", "Steering", "Live view", "Search", "SAEs")


def tiny_job(tmp_path) -> BuildJob:
    corpus = tmp_path / "corpus.jsonl"
    lines = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(40)) for i in range(60)]
    corpus.write_text("\n".join(json.dumps({"text": t}) for t in lines))
    cfg = TrainConfig(expansion=2, k=4, batch_tokens=64, lm_batch_tokens=64, bf16=False)
    return BuildJob(tmp_path / "fresh", BuildConfig(corpus=str(corpus), seq_len=16, held_out=8),
                    cfg, parts=("SAEs", "layer map", "feature index"))


def test_first_page_then_progress_then_tabs_fill_in(tmp_path, monkeypatch, tiny_atlas):
    """(`tiny_atlas` registers the tiny model with the app's session.)"""
    go = threading.Event()  # holds the build until the page has shown it running

    def gated_lm(name):
        go.wait(120)
        return session.model("tiny-llama")

    monkeypatch.setattr(builds, "WORKER", BuildWorker(gated_lm))
    job = tiny_job(tmp_path)
    builds.WORKER.start(job)
    with served(app.build_app(job.folder)) as url, browser_page(url) as page:
        page.get_by_text(re.compile(r"Building\s+fresh")).first.wait_for(timeout=20_000)
        # every tab while the first build runs: plain words, never an error toast
        for tab in TABS:
            page.get_by_role("tab", name=tab).click()
            page.wait_for_timeout(700)  # a select event's round trip
        assert page.locator(".toast-body.error").all_inner_texts() == []
        page.get_by_role("tab", name="Features").click()
        page.get_by_text(re.compile(r"page .* will appear here")).first.wait_for(timeout=10_000)
        page.get_by_role("tab", name="Layer map").click()
        page.get_by_text(re.compile(r"layer map will appear here.*fresh")).first.wait_for(
            timeout=10_000)
        assert not page.get_by_role("button", name="Build the layer map").is_visible()
        go.set()
        page.get_by_text(re.compile(r"fresh\s+is ready")).first.wait_for(timeout=120_000)
        page.locator(".gtitle").first.wait_for(timeout=20_000)  # the heatmap drew itself
        page.get_by_role("tab", name="Features").click()
        page.get_by_text("Top activations").first.wait_for(timeout=20_000)
        assert not page.get_by_role("button", name="Build the feature index").is_visible()
    assert builds.WORKER.status().ready == ("SAEs", "layer map", "feature index")


@pytest.fixture
def public_mode():
    old = public.set_policy(public.Policy.for_mode(True))
    yield
    public.set_policy(old)


def test_public_mode_has_no_push_and_refuses_free_model_ids(tiny_atlas, public_mode):
    with served(app.build_app(tiny_atlas, public=True)) as url:
        with browser_page(url) as page:
            page.get_by_role("tab", name="SAEs").click()
            page.get_by_text("Load SAEs from the Hugging Face Hub").first.wait_for(timeout=15_000)
            assert page.get_by_role("button", name="Push to the Hub").count() == 0
            assert page.get_by_role("button", name="Train").count() == 0
        client = Client(url, verbose=False)
        with pytest.raises(ValueError, match="push_set"):
            client.predict(str(tiny_atlas), "x", "me/x", api_name="/push_set")
        with pytest.raises(Exception, match=r"not (in the list of choices|one of them)"):
            client.predict("gpt2-small-res-jb", "all", "some/free-text-model", None,
                           api_name="/hub_load_release")
