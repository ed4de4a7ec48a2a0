"""Every file the project writes goes through here: a temporary file in the same folder,
fsync, then a rename over the target. A reader (or a build killed at any point) sees the old
file or the new one, never half of one. Reads of JSON and safetensors go through here too,
so a truncated or corrupt file is reported as `CorruptFile`, never loaded.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from safetensors import SafetensorError


class CorruptFile(ValueError):
    """A file on disk that is truncated, unreadable or not what was written."""


class DiskFull(OSError):
    """The disk filled while writing; the file being written was left as it was."""


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


TMP_SUFFIX = ".tmp"


def orphaned_temporaries(folder: Path | str) -> list[Path]:
    """Temporary files under `folder` whose writing process is gone (killed mid-write)."""
    out = []
    for tmp in Path(folder).rglob(f".*{TMP_SUFFIX}"):
        parts = tmp.name.split(".")  # "", name..., pid, random, "tmp"
        if tmp.is_file() and len(parts) >= 5 and parts[-3].isdigit() \
                and not _alive(int(parts[-3])):
            out.append(tmp)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def write_atomic(path: Path | str, write: Callable[[Path], None]) -> None:
    """`write(tmp)` writes the whole content to `tmp`; it then replaces `path` at once.

    A full disk raises DiskFull naming the file; the target keeps its old content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the writer's pid in the name tells a killed writer's leftover from a live one's file
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                                suffix=TMP_SUFFIX)
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the atlas's files are not
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno == errno.ENOSPC:
            raise DiskFull(errno.ENOSPC, f"the disk is full: could not write {path} "
                           "(what was there before is unchanged; free space and run again)"
                           ) from err
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: Path | str, data: bytes) -> None:
    write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: Path | str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path | str, data, *, indent: int | None = 1) -> None:
    write_text(path, json.dumps(data, indent=indent))


def save_tensors(path: Path | str, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """safetensors.torch.save_file, atomically (contiguous copies where needed)."""
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in tensors.items()}
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def read_json(path: Path | str):
    """The JSON in `path`; CorruptFile when it is not valid JSON, FileNotFoundError when
    it is missing."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptFile(f"{path} is corrupt or truncated ({err}); build it again") from err


def load_tensors(path: Path | str) -> dict:
    """safetensors.torch.load_file, copied out of the file's memory map (a file damaged in
    place later would crash the process on the next read of a mapped tensor); CorruptFile
    when the file is truncated or corrupt."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return {k: v.clone() for k, v in load_file(str(path)).items()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CorruptFile(f"{path} is corrupt or truncated ({err}); build it again") from err


def tensors_metadata(path: Path | str) -> dict[str, str]:
    """The string metadata stored in a safetensors file's header."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CorruptFile(f"{path} is corrupt or truncated ({err}); build it again") from err
