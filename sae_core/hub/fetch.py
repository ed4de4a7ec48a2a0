"""Fetch one file of a Hub repo (or a local folder) through `huggingface_hub`'s cache.

Every failure becomes a `HubError` that names the repo and the file; paths from users or
configs must stay inside the repo, and fetched files inside the cache (no `..`, no
absolute paths, no symlinks leading out). Weights are read from safetensors, or from npz
without pickles; torch pickles only through torch_weights.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import repo_folder_name
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from ..errors import BadInput, check_repo_id

MAX_PATH_CHARS = 300
"""Longest path inside a repo accepted."""


class HubError(ValueError):
    """A pretrained SAE could not be found, fetched or converted; the message says why."""


def check_repo(repo_id: str) -> str:
    """The repo id, checked before any request (sae_core.errors.check_repo_id); HubError
    otherwise."""
    try:
        return check_repo_id(repo_id)
    except BadInput as err:
        raise HubError(str(err)) from None


def safe_path(path: str) -> str:
    """A folder inside the repo: relative, no `..`; a clear error otherwise."""
    if not isinstance(path, str) or len(path) > MAX_PATH_CHARS:
        raise HubError(f"SAE path {path!r:.60} must be text of at most {MAX_PATH_CHARS} "
                       "characters")
    p = PurePosixPath(path.strip().replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or re.match(r"^[A-Za-z]:", path.strip()):
        raise HubError(f"SAE path {path!r} points outside the repository")
    return "" if str(p) == "." else str(p)


def join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


@contextmanager
def access_errors(repo_id: str, revision: str | None) -> Iterator[None]:
    """The repo-level failures (gated, missing or private, no such revision) as HubErrors
    that say what to do."""
    try:
        yield
    except GatedRepoError as err:
        raise HubError(f"repository {repo_id!r} is gated: accept its terms on the Hub and "
                       "configure a token") from err
    except RepositoryNotFoundError as err:
        raise HubError(f"repository {repo_id!r} was not found on the Hugging Face Hub (or it "
                       "is private: configure a token)") from err
    except RevisionNotFoundError as err:
        raise HubError(f"repository {repo_id!r} has no revision {revision!r}") from err


def fetch(repo_id: str, filename: str, *, revision: str | None, cache_dir: Path,
          token: str | bool | None, optional: bool = False) -> Path | None:
    """The local path of one repo file, downloaded into the cache if needed. `token`: as
    huggingface_hub takes it (None: the configured token; False: send none). The repo id
    and the file's path are checked before any request."""
    repo_id, filename = check_repo(repo_id), safe_path(filename)
    if revision is not None and (not isinstance(revision, str) or len(revision) > 200
                                 or ".." in revision or not revision.strip()
                                 or any(c.isspace() for c in revision)):
        raise HubError(f"{revision!r:.60} is not a revision (a branch, tag or commit)")
    repo_root = cache_dir / repo_folder_name(repo_id=repo_id, repo_type="model")
    try:
        with access_errors(repo_id, revision):
            path = Path(hf_hub_download(repo_id, filename, revision=revision,
                                        cache_dir=cache_dir, token=token))
    except HubError:
        raise
    except LocalEntryNotFoundError as err:
        if optional:
            return None
        if not repo_root.exists():
            raise HubError(f"cannot reach the Hugging Face Hub and repository {repo_id!r} is "
                           f"not in the local cache ({cache_dir})") from err
        raise HubError(f"file {filename!r} of repository {repo_id!r} is not in the local cache "
                       "and the Hub cannot be reached (offline?)") from err
    except EntryNotFoundError as err:
        if optional:
            return None
        raise HubError(f"file {filename!r} is missing from repository {repo_id!r}") from err
    except (HFValidationError, ValueError) as err:
        raise HubError(f"bad repository id or file name ({repo_id!r}, {filename!r}): "
                       f"{err}") from err
    except (HfHubHTTPError, OSError) as err:
        raise HubError(f"could not reach the Hub for repository {repo_id!r}: {err}") from err
    if not path.resolve().is_relative_to(repo_root.resolve()):
        raise HubError(f"{filename!r} of {repo_id!r} resolves to {path.resolve()}, outside "
                       f"the Hub cache folder {repo_root}")
    return path


def revision_of(path: Path) -> str:
    """The commit hash of the snapshot a cached file sits in."""
    parts = path.parts
    i = len(parts) - 1 - parts[::-1].index("snapshots")
    return parts[i + 1]


def read_json(path: Path, what: str) -> dict:
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HubError(f"{what} is not valid JSON: {err}") from err
    if not isinstance(raw, dict):
        raise HubError(f"{what} is not a JSON object")
    return raw


def read_tensors(path: Path, what: str) -> dict[str, Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise HubError(f"{what}: corrupt or truncated safetensors file: {err}") from err


def read_npz(path: Path, what: str) -> dict[str, Tensor]:
    """The arrays of an `.npz` as tensors sharing their memory; object arrays (pickles)
    are refused."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: torch.from_numpy(data[name]) for name in data.files}
    except (ValueError, TypeError, OSError, EOFError) as err:
        raise HubError(f"{what}: not a plain .npz of numeric arrays: {err}") from err


def cached_listing(repo_id: str, folder: str, *, revision: str | None, cache_dir: Path,
                   limit: int = 12) -> list[str]:
    """The names in `folder` of the cached snapshot (for error messages); [] when the cache
    does not hold it."""
    root = cache_dir / repo_folder_name(repo_id=repo_id, repo_type="model")
    ref = root / "refs" / (revision or "main")
    rev = ref.read_text().strip() if ref.is_file() else revision or ""
    snap = root / "snapshots" / rev / folder if rev else None
    if snap is None or not snap.is_dir():
        return []
    return sorted(p.name + ("/" if p.is_dir() else "") for p in snap.iterdir())[:limit]
