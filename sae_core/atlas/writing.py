"""How an atlas folder is written safely.

- One writer at a time: `atlas_lock` holds an exclusive lock on `.<name>.lock` next to the
  folder, so the CLI and the app (or two app threads) never write one atlas at once.
- A build never writes into a finished atlas: it trains and saves in `.<name>.building`
  (its checkpoint lives there too) and swaps the finished folder in whole (`swap_in`), so a
  crash, a full disk or a refused resume leaves the previous atlas as it was. Its layer map,
  feature index and presets go with it: they were computed from the old SAEs.
- Every producer of an atlas (a build, a pretrained set) writes its files with `write_atlas`:
  SAEs, metrics.json, then atlas.json last, which marks the folder finished.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from ..atomic import orphaned_temporaries, write_json
from ..sae import Sae
from .fingerprint import digest_of, sae_file_digests
from .info import AtlasInfo, info_json
from .layout import INFO_FILE, LABELS_STEM, METRICS_FILE

CARRIED = (f"{LABELS_STEM}.safetensors", f"{LABELS_STEM}.json")
"""Files that depend on the corpus and tokenizer only, not the SAEs: kept across a rebuild."""


class AtlasBusy(RuntimeError):
    """Another build is writing this atlas."""


def _sibling(out: Path, suffix: str) -> Path:
    return out.parent / f".{out.name}.{suffix}"


def staging_dir(out: Path) -> Path:
    return _sibling(Path(out), "building")


def _remove_leftovers(out: Path) -> None:
    """Delete the temporary files of writers killed mid-write (their process is gone)."""
    for tmp in orphaned_temporaries(out):
        tmp.unlink(missing_ok=True)


@contextmanager
def atlas_lock(out: Path | str) -> Iterator[None]:
    """Hold the atlas's write lock, or raise AtlasBusy at once (never wait behind a build);
    temporaries left by a killed writer go first."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(_sibling(out, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise AtlasBusy(f"another build is writing {out} right now; try again when it "
                            "has finished") from err
        _remove_leftovers(out)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def recover_swap(out: Path, finished) -> bool:
    """Finish or undo a swap that a crash interrupted (call under the lock): the new folder
    goes in if it is `finished`, else the previous atlas comes back. True when the finished
    new build went in (the build is done)."""
    out, old, new = Path(out), _sibling(Path(out), "old"), staging_dir(Path(out))
    done = False
    if old.exists() and not out.exists():
        done = new.exists() and finished(new)
        os.rename(new if done else old, out)
    if old.exists():
        shutil.rmtree(old)
    return done


def swap_in(new: Path, out: Path) -> None:
    """Replace the folder `out` with the finished folder `new` (call under the lock)."""
    out, old = Path(out), _sibling(Path(out), "old")
    if out.exists():
        os.rename(out, old)
    os.rename(new, out)
    if old.exists():
        for name in CARRIED:
            if (old / name).exists() and not (out / name).exists():
                os.rename(old / name, out / name)
        shutil.rmtree(old)


def write_atlas(folder: Path, saes: dict[str, Sae], info: AtlasInfo,
                measure: Callable[[AtlasInfo], tuple[dict[str, dict], AtlasInfo]]) -> AtlasInfo:
    """Write an atlas into `folder` (a staging folder the caller swaps in): each SAE with its
    metadata, then `measure(record)`, given the record that names the SAEs and their files'
    digests, returns the metrics per hookpoint and the final record; metrics.json, then
    atlas.json last (it marks a finished atlas). Returns the record written."""
    for h, sae in saes.items():
        sae.save(Path(folder) / h)
    files = sae_file_digests(folder, list(saes))
    metrics, info = measure(replace(info, hookpoints=tuple(saes), sae_files=files,
                                    sae_fingerprint=digest_of(files)))
    write_json(Path(folder) / METRICS_FILE, metrics)
    write_json(Path(folder) / INFO_FILE, info_json(info))
    return info
