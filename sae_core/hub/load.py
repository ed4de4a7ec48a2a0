"""Load pretrained SAEs from the Hugging Face Hub: SAELens and EleutherAI sparsify formats.

Only the files one SAE needs are fetched, through `huggingface_hub`'s cache (so its cache
folder, `HF_HUB_OFFLINE` and tokens apply). The format is read from `cfg.json`; one
converter per format (formats.py) turns (config, tensors) into our `Sae`. Weights are
safetensors only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from huggingface_hub import constants

from ..activations import parse_hookpoint
from ..lm import LM
from ..sae import Sae
from .fetch import (
    HubError,
    check_repo,
    fetch,
    join,
    read_json,
    read_tensors,
    revision_of,
    safe_path,
)
from .formats import CFG_FILE, CONVERTERS, WEIGHTS, Converted, detect_format, fold_input_scale
from .registry import RELEASES, Release, same_model

MAX_IDS_CHARS = 4000
"""Longest list of SAE ids accepted (all of a 30-layer release fit)."""


@dataclass(frozen=True)
class SaeSource:
    repo_id: str
    path: str
    """Folder of this SAE inside the repo ("" for the repo root)."""
    revision: str
    """Commit hash of the snapshot the files came from."""
    format: str
    trained_for: str
    """The model the SAE was trained on, as its files (or the registry) name it."""


@dataclass(frozen=True)
class PretrainedSet:
    saes: dict[str, Sae]
    """Our hookpoint -> SAE, in layer order."""
    sources: dict[str, SaeSource]
    repo_id: str
    release: str | None
    warnings: tuple[str, ...] = ()
    needs_scale: tuple[str, ...] = field(default=())
    """Hookpoints whose SAE expects inputs scaled to norm sqrt(d_in) (SAELens
    `expected_average_only_in`) and got no factor: estimate one on a corpus, then
    `fold_input_scale`, before encoding anything."""

    @property
    def revision(self) -> str:
        return ",".join(sorted({s.revision for s in self.sources.values()}))


def load_sae(repo_id: str, path: str, *, revision: str | None = None,
             cache_dir: str | Path | None = None, token: str | bool | None = None,
             hook: str = "", trained_for: str = "") -> tuple[Converted, SaeSource]:
    """One SAE from folder `path` of `repo_id`: cfg.json first, then its format's weights.

    `hook` names what the SAE reads when its config does not (registry SAE ids);
    `trained_for` names its model when its files do not."""
    folder, cache = safe_path(path), Path(cache_dir or constants.HF_HUB_CACHE)
    what = f"{repo_id}/{folder}" if folder else repo_id
    kw = dict(revision=revision, cache_dir=cache, token=token)
    cfg = read_json(fetch(repo_id, join(folder, CFG_FILE), **kw), f"{what}/{CFG_FILE}")
    fmt = detect_format(cfg, what)
    if fmt == "sparsify":
        # The training run's config.json one level up names the model; it is optional.
        parent = str(PurePosixPath(folder).parent).strip(".")
        run_path = fetch(repo_id, join(parent, "config.json"), optional=True, **kw)
        run = read_json(run_path, f"{repo_id}/{join(parent, 'config.json')}") if run_path else {}
        cfg = {"model": run.get("model") or trained_for} | cfg
    elif trained_for:
        cfg = {"model_name": trained_for} | cfg
    weights = fetch(repo_id, join(folder, WEIGHTS[fmt]), **kw)
    try:
        converted = CONVERTERS[fmt](cfg, read_tensors(weights, what),
                                    hook or PurePosixPath(folder).name, what)
    except HubError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise HubError(f"{what}: bad {fmt} config ({type(err).__name__}: {err})") from err
    source = SaeSource(repo_id, folder, revision_of(weights), fmt,
                       converted.sae.cfg.model_name)
    return converted, source


def check_model(sae: Sae, lm: LM, what: str) -> str | None:
    """A clear error when the SAE cannot read this model; a warning when only shapes fit."""
    try:
        lm.module_for(sae.cfg.hookpoint)
    except ValueError as err:
        raise HubError(f"{what} ({sae.cfg.hookpoint}): {err}") from err
    trained_for = sae.cfg.model_name or "an unnamed model"
    if sae.cfg.d_in != lm.d_model:
        raise HubError(f"{what} reads vectors of width {sae.cfg.d_in} but {lm.name} has "
                       f"d_model={lm.d_model}: it was trained for {trained_for}")
    if not same_model(sae.cfg.model_name, lm.name):
        return (f"{what} was trained for {trained_for}, not {lm.name}: only the weights' "
                "shape fits, so features may read the activations differently")
    return None


def parse_ids(sae_ids: str | Sequence[str], release: Release | None) -> list[str]:
    """A list, or a comma-separated string; "all" means every SAE of a registry release."""
    if isinstance(sae_ids, str):
        sae_ids = sae_ids[:MAX_IDS_CHARS + 1].split(",")
    if not isinstance(sae_ids, list | tuple) or not all(isinstance(s, str) for s in sae_ids) \
            or sum(map(len, sae_ids)) > MAX_IDS_CHARS:
        raise HubError(f"SAE ids must be text (comma-separated), at most {MAX_IDS_CHARS:,} "
                       "characters")
    ids = [s.strip() for s in sae_ids]
    ids = [s for s in ids if s]
    if ids == ["all"]:
        if release is None:
            raise HubError("'all' needs a release from the registry; name the SAE folders")
        return release.sae_ids
    if not ids:
        raise HubError("name at least one SAE id or hookpoint (folder in the repo)")
    return ids


def load_pretrained(
    source: str, sae_ids: str | Sequence[str], *, lm: LM | None = None,
    revision: str | None = None, cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    norm_scaling_factor: float | None = None,
    report: Callable[[str, float], None] | None = None,
) -> PretrainedSet:
    """SAEs from a registry release, a Hub repo id or a local folder, checked against `lm`.

    `sae_ids`: release SAE ids (e.g. `blocks.5.hook_resid_post`) or folders in the repo
    (e.g. `layers.6.mlp`). Nothing is kept unless every SAE loads. `token` goes to every
    Hub call (None: huggingface_hub's default, the configured token; False: send none).
    With `lm`, the SAEs go to its device (encode.py's module doc).
    """
    if not isinstance(source, str) or not source.strip():
        raise HubError("name a release from the registry or a Hub repo id")
    release = RELEASES.get(source.strip())
    repo_id = release.repo_id if release else check_repo(source)
    saes, sources, warns, pending = {}, {}, [], []
    if release and release.note:
        warns.append(f"{release.name}: {release.note}")
    ids = parse_ids(sae_ids, release)
    for i, sae_id in enumerate(ids):
        if report:
            report(f"fetching {sae_id} from {repo_id} ({i + 1}/{len(ids)})", i / len(ids))
        path = release.path_of(sae_id) if release else sae_id
        (sae, norm), src = load_sae(
            repo_id, path, revision=revision, cache_dir=cache_dir, token=token,
            hook=sae_id if release else "", trained_for=release.model if release else "")
        h = sae.cfg.hookpoint
        if h in saes:
            raise HubError(f"{sae_id} and another SAE both read hookpoint {h}")
        if norm == "expected_average_only_in":
            if norm_scaling_factor is not None:
                fold_input_scale(sae, norm_scaling_factor)
            else:
                pending.append(h)
        if lm is not None:
            sae.to(lm.device)
            if warning := check_model(sae, lm, f"{repo_id}/{path}"):
                warns.append(warning)
        sae.metadata |= {"source_repo": repo_id, "source_path": src.path,
                         "source_revision": src.revision, "source_format": src.format}
        saes[h], sources[h] = sae, src
    order = sorted(saes, key=lambda h: (parse_hookpoint(h)[0], h))
    return PretrainedSet({h: saes[h] for h in order}, {h: sources[h] for h in order}, repo_id,
                         release.name if release else None, tuple(dict.fromkeys(warns)),
                         tuple(pending))
