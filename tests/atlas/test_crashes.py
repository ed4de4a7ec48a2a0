"""A build killed with SIGKILL inside each stage (training, evaluation, layer map, feature
index), then run again, ends with the same atlas as a build never interrupted."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import WORDS
from tests.counts import count

ROOT = Path(__file__).resolve().parents[2]
TIMINGS = {"train_seconds", "total_seconds", "train_tok_s", "pass_seconds", "seconds"}
KILL_IN = ("SAEs|training batch 12/", "SAEs|CE loss", "layer map|one pass over",
           "feature index|")
"""Where to kill: the first report line starting so (then after a random delay)."""
PRODUCT = {"SAEs|training batch 12/": ".", "SAEs|CE loss": ".",
           "layer map|one pass over": "layer_map.json", "feature index|": "features"}
"""What a stage leaves when it finished before its kill (".": the whole atlas)."""


def _start(folder: Path, corpus: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.atlas.crash_build", str(folder), str(corpus)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"})


def _kill_at(folder: Path, corpus: Path, prefix: str, delay: float) -> bool:
    """Run the build and SIGKILL it `delay` s after its first report starting `prefix`;
    whether it was killed (not finished first)."""
    proc = _start(folder, corpus)
    for line in proc.stdout:
        if line.startswith(prefix):
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(120)
    return proc.returncode == -signal.SIGKILL


def _files(folder: Path) -> dict[str, object]:
    """Every file of an atlas: JSON without its timings, other files as bytes."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = str(path.relative_to(folder))
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            out[rel] = {k: v for k, v in data.items() if k not in TIMINGS}
        else:
            out[rel] = path.read_bytes()
    return out


def test_killed_builds_end_as_the_uninterrupted_one(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    lines = [" ".join(WORDS[(i * 5 + j) % len(WORDS)] for j in range(40)) for i in range(60)]
    corpus.write_text("\n".join(json.dumps({"text": t}) for t in lines))
    whole = _start(tmp_path / "whole", corpus)
    out, _ = whole.communicate(timeout=300)
    assert whole.returncode == 0, out

    rng = random.Random(14)
    crashed = tmp_path / "crashed"
    for prefix in KILL_IN:
        delay = rng.uniform(0, 0.3)
        # a quick stage may finish before the delay is up: its product goes, and the next
        # try (a shorter delay) kills the stage as it runs again
        while not _kill_at(crashed, corpus, prefix, delay):
            assert delay > 0, f"finished before the kill in {prefix}"
            part = crashed / PRODUCT[prefix]
            shutil.rmtree(part) if part.is_dir() else part.unlink()
            delay = delay / 4 if delay > 0.01 else 0.0
        count("builds killed with SIGKILL and resumed")
    again = _start(crashed, corpus)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out
    expected, got = _files(tmp_path / "whole"), _files(crashed)
    assert list(got) == list(expected)
    for rel in expected:
        assert got[rel] == expected[rel], rel
    assert not list(tmp_path.glob(".crashed.*[!k]"))  # no staging or old folder left
