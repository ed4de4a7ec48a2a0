"""A whole built atlas on the Hugging Face Hub: publish one (`push_atlas`), and take one
from the Hub cache (`open_hub_atlas`) so that an app (a Space) starts without building.

A published repo holds the atlas folder as it is on disk (layout.py: atlas.json,
metrics.json, layers.N/, the layer map, features/, presets.json when there is one) plus a
README.md model card; never `_checkpoint/` nor temporary or lock files. `fetch_atlas` reads
it through `snapshot_download`, so HF_HUB_OFFLINE, HF_HUB_CACHE and HF_HOME hold, and a repo
a Space preloads (`preload_from_hub`) opens offline. `check_atlas` (atlas_check.py) says what
a fetched copy lacks before the app trusts it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import HfApi, constants, get_token, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    IncompleteSnapshotError,
    LocalEntryNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from ..atlas.layout import LAYER_MAP_FILE, PRESETS_FILE, is_built, read_info, read_metrics
from ..atomic import write_text
from ..explore.feature_index import has_feature_index, read_index_meta
from ..explore.layermap import has_layer_map
from ..sae import CONFIG_FILE
from ..saelens import sae_config_from_saelens
from .atlas_check import AtlasCheckError, check_atlas  # re-exported for the app
from .export import model_card
from .fetch import HubError, access_errors

IGNORE_PATTERNS = ("_checkpoint", "_checkpoint/*", "_incoming/*", "*.tmp", "*.tmp.*", "*.lock",
                   "*.part", "*~", "tmp*", "*/tmp*", ".*", "*/.*")
"""Never published: the resumable training state, temporary, lock and hidden files.
Globs as `upload_folder` reads them (fnmatch on the path in the folder: `*` crosses `/`)."""
CARD_FILE = "README.md"


def parse_repo_spec(spec: str) -> tuple[str, str | None]:
    """("USER/REPO", revision or None) from "USER/REPO[@revision]"; HubError (a ValueError)
    otherwise."""
    spec = (spec or "").strip()
    repo_id, sep, revision = spec.partition("@")
    why = None
    if repo_id.count("/") != 1:
        why = "it needs the form USER/REPO"
    elif sep and (not revision or any(c.isspace() for c in revision) or ".." in revision):
        why = f"{revision!r} is not a revision (a branch, tag or commit)"
    else:
        try:
            validate_repo_id(repo_id)
        except HFValidationError as err:
            why = str(err)
    if why:
        raise HubError(f"{spec!r} is not a Hugging Face repo (USER/REPO or USER/REPO@revision): "
                       f"{why}")
    return repo_id, revision or None


def push_atlas(folder: Path | str, repo_id: str, *, token: str | None = None,
               private: bool = False, revision: str | None = None) -> str:
    """Publish a finished atlas (with its layer map and feature index) to a Hub model repo,
    with a README.md model card (also written into the folder); returns the commit URL."""
    folder = Path(folder)
    repo_id, spec_revision = parse_repo_spec(repo_id)
    revision = revision or spec_revision
    info, cfgs = _publishable(folder)
    token = token or get_token()
    if not token:
        raise HubError("no Hugging Face token is configured (set HF_TOKEN or run "
                       "`hf auth login`); nothing was pushed")
    card = model_card(info, read_metrics(folder), cfgs, repo_id, atlas=_atlas_parts(folder))
    write_text(folder / CARD_FILE, str(card))
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, exist_ok=True, private=private)
        if revision and revision != constants.DEFAULT_REVISION:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=folder, revision=revision,
            ignore_patterns=list(IGNORE_PATTERNS),  # upload_folder extends the list it gets
            commit_message=f"SAE Atlas atlas {folder.name} ({info.model})")
    except (HfHubHTTPError, ValueError, OSError) as err:
        raise HubError(f"could not push {folder} to {repo_id!r}: {err}") from err
    return str(commit.commit_url)


def _publishable(folder: Path) -> tuple[dict, dict]:
    """(atlas.json, SAE configs per hookpoint) of an atlas fit to publish; HubError saying
    what is missing and how to build it otherwise."""
    if not is_built(folder):
        raise HubError(f"{folder} is not a finished atlas (no atlas.json/metrics.json): build "
                       f"it first with `python -m sae_core train --out {folder}`")
    info = read_info(folder)
    cfgs = {}
    for h in info.hookpoints:
        try:
            cfgs[h] = sae_config_from_saelens(json.loads((folder / h / CONFIG_FILE).read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # check_atlas below names it
    d_model = next(iter(cfgs.values())).d_in if cfgs else 0
    problems = check_atlas(folder, model=info.model, d_model=d_model)
    derived = ("The layer map", "The feature index")  # missing ones get the hints below
    if saes_problems := [p for p in problems if not p.startswith(derived)]:
        raise HubError(f"{folder} is not ready to publish: {' '.join(saes_problems)}")
    if not has_layer_map(folder):
        raise HubError(f"{folder} has no layer map of its SAEs ({LAYER_MAP_FILE}): build it by "
                       "opening the atlas's Layer map tab in the app, or with "
                       "sae_core.explore.layermap."
                       f"ensure_layer_map(Path({str(folder)!r}))")
    if not has_feature_index(folder):
        raise HubError(f"{folder} has no feature index of its SAEs (features/index.json): build "
                       "it by opening the atlas's Features tab in the app, or with "
                       "sae_core.explore."
                       f"feature_index.ensure_feature_index(Path({str(folder)!r}))")
    if problems:
        raise HubError(f"{folder} is not ready to publish: {' '.join(problems)}")
    return info, cfgs


def _atlas_parts(folder: Path) -> dict[str, str]:
    """What the card lists beside the SAEs: part -> its files."""
    meta = read_index_meta(folder)
    labels = " and the token labels it was counted on (`labels.*`)" if \
        (folder / "labels.json").exists() else ""
    parts = {
        "layer map": f"`{LAYER_MAP_FILE}` + `layer_map.json`: per layer and token label, how "
                     "many SAE features (and raw neurons, random directions) fire consistently "
                     f"on that label{labels}",
        "feature index": f"`features/`: top contexts, quantile samples, density and activation "
                         f"histogram of every feature, over {meta['windows']} windows of "
                         f"{meta['seq_len']} tokens",
    }
    if (folder / PRESETS_FILE).exists():
        parts["steering presets"] = f"`{PRESETS_FILE}`: features that steer visibly, resolved "\
            "for this atlas"
    return parts


@contextmanager
def _hub_errors(repo_id: str, revision: str | None, cache: Path) -> Iterator[None]:
    """huggingface_hub's failures as one HubError that says what to do."""
    at = f" at revision {revision!r}" if revision else ""
    try:
        with access_errors(repo_id, revision):
            yield
    except HubError:
        raise
    except IncompleteSnapshotError as err:
        raise HubError(f"the cached copy of {repo_id!r}{at} in {cache} is incomplete and the "
                       f"Hub cannot be reached: {err}") from err
    except LocalEntryNotFoundError as err:
        raise HubError(f"repository {repo_id!r}{at} is not in the Hub cache ({cache}) and the "
                       "Hub cannot be reached (HF_HUB_OFFLINE=1 or no network)") from err
    except (HfHubHTTPError, OSError) as err:
        raise HubError(f"could not fetch {repo_id!r} from the Hub: {err}") from err
    except ValueError as err:
        raise HubError(f"could not fetch {repo_id!r}: {err}") from err


def fetch_atlas(spec: str, *, token: str | bool | None = None,
                cache_dir: Path | str | None = None) -> Path:
    """The snapshot folder of the atlas repo "USER/REPO[@revision]" in the Hub cache
    (`cache_dir`, default HF_HUB_CACHE), downloaded when missing and the Hub is reachable.
    `token`: None uses the configured one, False sends none (a public app's visitors)."""
    repo_id, revision = parse_repo_spec(spec)
    cache = Path(cache_dir or constants.HF_HUB_CACHE)
    with _hub_errors(repo_id, revision, cache):
        snapshot = Path(snapshot_download(repo_id, revision=revision, token=token,
                                          cache_dir=cache_dir))
    # Files of a snapshot link into the repo's blobs: none may lead out of its cache folder.
    storage = snapshot.parents[1].resolve()
    for path in snapshot.rglob("*"):
        if not path.resolve().is_relative_to(storage):
            raise HubError(f"{path} of {repo_id!r} resolves outside the Hub cache folder "
                           f"{storage}")
    return snapshot


def open_hub_atlas(spec: str, *, model: str, d_model: int, token: str | bool | None = None,
                   cache_dir: Path | str | None = None) -> Path:
    """The folder of a prebuilt atlas from the Hub cache, checked for `model`: HubError when
    it cannot be fetched, AtlasCheckError (every problem found) when it is unusable."""
    folder = fetch_atlas(spec, token=token, cache_dir=cache_dir)
    problems = check_atlas(folder, model=model, d_model=d_model)
    if problems:
        raise AtlasCheckError(f"the atlas {spec.strip()!r} from the Hub cannot be used: "
                              + " ".join(problems))
    return folder
