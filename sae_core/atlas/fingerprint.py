"""The fingerprint of an atlas's SAEs: what every derived product (layer map, feature index,
presets) and every in-memory cache is keyed by, so nothing computed from other SAEs is
served after a rebuild.

It is the sha256 of the sha256 of each SAE file (cfg.json and the weights). A build records
each file's digest in atlas.json; opening the atlas checks them, so a file changed or
damaged since the build is reported, never used. A file is hashed once per (path, size,
mtime) in this process: the first look at 30 SAEs reads their weights once (about a second).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from ..atomic import CorruptFile
from ..sae import CONFIG_FILE, WEIGHTS_FILE
from .info import AtlasInfo

SAE_FILES = (CONFIG_FILE, WEIGHTS_FILE)
CHUNK = 1 << 20

_digests: dict[tuple[Path, int, int], str] = {}
_lock = threading.Lock()


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


def sae_file_digests(folder: Path | str, hookpoints: Sequence[str]) -> dict[str, str]:
    """{"layers.N/cfg.json": sha256, ...} of the SAE files in `folder`."""
    out = {}
    for h in hookpoints:
        for name in SAE_FILES:
            path = Path(folder) / h / name
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing: the SAE set is incomplete")
            out[f"{h}/{name}"] = file_sha256(path)
    return out


def digest_of(files: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def sae_fingerprint(folder: Path | str, info: AtlasInfo) -> str:
    """The fingerprint of the SAEs in an atlas folder (`info`: its atlas.json). When the
    build recorded the files' digests, each must still match: CorruptFile names the first
    that does not."""
    files = sae_file_digests(folder, info.hookpoints)
    recorded = info.sae_files
    if recorded:
        for rel, sha in files.items():
            if recorded.get(rel) != sha:
                raise CorruptFile(f"{Path(folder) / rel} is not the file this atlas was built "
                                  "with (changed or damaged since); build the atlas again")
    return digest_of(files)
