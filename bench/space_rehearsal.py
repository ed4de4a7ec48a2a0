"""A Space rehearsal with the real atlas (issue 30): the app started as a Space starts it,
from a virtual environment made from requirements.txt alone (no embedded model package, no
project install), on an empty working directory, with the default atlas pushed to a
hand-built Hugging Face cache (as tests/ui/test_space_start.py does with the tiny atlas)
and the model's files in that cache under its Hub id. Offline: nothing leaves the machine.

Reports, from the moment the app's process starts:
- first_page_s: the first page answered (HTTP 200 on /);
- atlas_served_s: the pushed atlas serving a feature page (the API's `/feature_page` answers
  for its middle layer with that layer's feature, not a "not ready" message);
- peak_rss_mb: the app process's peak resident memory (VmHWM) until then and through a few
  feature pages and a live view.
Targets: first page <= 15 s, atlas served <= 60 s, peak RSS < 8 GB.

    flock /tmp/bench.lock .venv/bin/python bench/space_rehearsal.py [--venv /tmp/space-venv]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import ROOT

sys.path.insert(0, str(ROOT))

from gradio_client import Client

from sae_core.atlas.layout import DEFAULT_ATLAS
from sae_core.hub import atlas_repo
from sae_core.lm import EMBEDDED_ID
from tests.browser import free_port
from tests.hub.repos import fake_hf_api, put_repo

REPO = "owner/sae-atlas-default"
TIMEOUT_S = 600


def space_venv(path: Path) -> tuple[Path, float]:
    """(python, seconds the install took; 0 when reused): a venv from requirements.txt."""
    python, stamp = path / "bin" / "python", path / ".installed"
    if stamp.exists() and stamp.read_text() == (ROOT / "requirements.txt").read_text():
        return python, 0.0
    shutil.rmtree(path, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r",
                    str(ROOT / "requirements.txt")], check=True)
    stamp.write_text((ROOT / "requirements.txt").read_text())
    return python, time.perf_counter() - t0


def hub_cache(scratch: Path, atlas: Path) -> Path:
    """The embedded model's files under its Hub id, and `atlas` pushed as REPO."""
    from ui.serving import session

    lm = session.model(EMBEDDED_ID)
    saved = scratch / "model"
    lm.model.save_pretrained(saved)
    lm.tokenizer.save_pretrained(saved)
    cache = put_repo(scratch / "hf", EMBEDDED_ID,
                     {p.name: p.read_bytes() for p in saved.iterdir() if p.is_file()})
    copy = shutil.copytree(atlas, scratch / "atlas", ignore=shutil.ignore_patterns(
        "_checkpoint", "*.lock", "*.tmp"))
    original = atlas_repo.HfApi
    atlas_repo.HfApi = fake_hf_api(cache, [])
    try:
        atlas_repo.push_atlas(copy, REPO, token="owner-token")
    finally:
        atlas_repo.HfApi = original
    shutil.rmtree(copy)
    return cache


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024  # kB


def first_page(url: str, proc: subprocess.Popen, t0: float) -> float:
    while time.perf_counter() - t0 < TIMEOUT_S:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited: {proc.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"no page within {TIMEOUT_S} s")


def atlas_served(url: str, layer: int, t0: float) -> float:
    """Seconds from t0 until `/feature_page` answers for `layer` with a feature page."""
    client = Client(url, verbose=False)
    try:
        while time.perf_counter() - t0 < TIMEOUT_S:
            try:
                page = client.predict("", layer, 0, api_name="/feature_page")
                if isinstance(page, dict) and page.get("feature") == 0:
                    return time.perf_counter() - t0
            except Exception:  # not ready yet: the answer names why; ask again
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the atlas was not served within {TIMEOUT_S} s")
    finally:
        client.close()


def exercise(url: str, layers: list[int]) -> None:
    """A visitor's first minute: a feature page per layer band and a live view."""
    client = Client(url, verbose=False)
    try:
        for layer in layers[::max(len(layers) // 3, 1)]:
            client.predict("", layer, 7, api_name="/feature_page")
        client.predict("", "The cat sat on the mat in Paris.", 3, api_name="/features_on_text")
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=Path("/tmp/space-venv"))
    parser.add_argument("--atlas", type=Path, default=ROOT / DEFAULT_ATLAS)
    args = parser.parse_args()
    python, install_s = space_venv(args.venv)
    print(f"venv from requirements.txt: {python} (install {install_s:.0f} s)", flush=True)
    layers = sorted(int(h.split(".")[1]) for h in
                    json.loads((args.atlas / "atlas.json").read_text())["hookpoints"])
    with tempfile.TemporaryDirectory() as scratch:
        cache = hub_cache(Path(scratch), args.atlas)
        print(f"hub cache with the model and {args.atlas} as {REPO}", flush=True)
        workdir = Path(scratch) / "space"
        workdir.mkdir()
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADIO_", "HF_"))}
        env |= {"GRADIO_SERVER_NAME": "0.0.0.0", "PORT": str(port),
                "SPACE_ID": "owner/sae-atlas", "SAE_ATLAS_REPO": REPO, "HF_HUB_OFFLINE": "1",
                "HF_HUB_CACHE": str(cache), "HF_TOKEN": "owner-secret",
                "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT)}
        url = f"http://127.0.0.1:{port}/"
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(python), str(ROOT / "app.py")], cwd=workdir, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            page_s = first_page(url, proc, t0)
            print(f"first page after {page_s:.1f} s", flush=True)
            served_s = atlas_served(url, layers[len(layers) // 2], t0)
            print(f"atlas served after {served_s:.1f} s", flush=True)
            exercise(url, layers)
            peak = peak_rss_mb(proc.pid)
        finally:
            proc.terminate()
            output = proc.communicate(timeout=60)[0]
    print("\n".join(output.splitlines()[-8:]))
    built = "Building" in output or "building" in output
    print(f"the app built something: {built}")
    print(f"RESULT first_page_s={page_s:.1f} atlas_served_s={served_s:.1f} "
          f"peak_rss_mb={peak:.0f} install_s={install_s:.0f}")


if __name__ == "__main__":
    main()
