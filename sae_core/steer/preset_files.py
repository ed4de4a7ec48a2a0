"""What resolved presets were computed from (presets.py), and whether that still holds.

The fingerprint names each SAE file of the atlas (cfg.json and the weights) by size, mtime
and sha256, the model, and a digest of the concept list. A check compares sizes, trusts an
unchanged mtime and hashes a file only when its mtime moved (a copied or downloaded atlas),
once per file version in this process: reading 30 SAEs' weights takes a second or two.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from ..sae import CONFIG_FILE, WEIGHTS_FILE

FORMAT_VERSION = 1
"""Of presets.json; another version is stale."""
SAE_FILES = (CONFIG_FILE, WEIGHTS_FILE)
CHUNK = 1 << 20

_digests: dict[tuple[Path, int, int], str] = {}
_lock = threading.Lock()


def concepts_digest(concepts: Sequence) -> str:
    """sha256 of the concept list's content (PresetConcepts; formatting does not count)."""
    text = json.dumps([asdict(c) for c in concepts], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path: Path, stat: os.stat_result | None = None) -> str:
    """sha256 of a file, computed once per (path, size, mtime)."""
    stat = stat or path.stat()
    key = (path.resolve(), stat.st_size, stat.st_mtime_ns)
    with _lock:
        if key in _digests:
            return _digests[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    with _lock:
        _digests[key] = h.hexdigest()
    return _digests[key]


def fingerprint(folder: Path, hookpoints: Sequence[str], model: str | None,
                concepts_sha256: str) -> dict:
    """What presets resolved on the atlas in `folder` depend on."""
    files = {}
    for h in hookpoints:
        for name in SAE_FILES:
            path = Path(folder) / h / name
            stat = path.stat()
            files[f"{h}/{name}"] = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                                    "sha256": file_sha256(path, stat)}
    return {"version": FORMAT_VERSION, "model": model, "concepts_sha256": concepts_sha256,
            "files": files}


def is_fresh(saved: dict | None, folder: Path, hookpoints: Sequence[str], model: str | None,
             concepts_sha256: str) -> bool:
    """Whether a saved fingerprint still describes the atlas in `folder` and the concepts."""
    if not isinstance(saved, dict) or saved.get("version") != FORMAT_VERSION:
        return False
    if saved.get("model") != model or saved.get("concepts_sha256") != concepts_sha256:
        return False
    files = saved.get("files") or {}
    if set(files) != {f"{h}/{name}" for h in hookpoints for name in SAE_FILES}:
        return False
    for rel, stamp in files.items():
        path = Path(folder) / rel
        try:
            stat = path.stat()
        except OSError:
            return False
        if stat.st_size != stamp["bytes"]:
            return False
        if stat.st_mtime_ns != stamp["mtime_ns"] and file_sha256(path, stat) != stamp["sha256"]:
            return False
    return True


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON to a temporary file in the same folder, then move it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it private; the atlas's other files are not
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
