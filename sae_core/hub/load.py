"""Load pretrained SAEs from the Hugging Face Hub, in every layout formats.py names.

Only the files one SAE needs are fetched, through `huggingface_hub`'s cache (so its cache
folder, `HF_HUB_OFFLINE` and tokens apply). The layout comes from the release when it names
one, else from the files in the SAE's folder (cfg.json: SAELens or sparsify; params.npz:
Gemma Scope; ...); one converter per layout turns (config, tensors) into our `Sae`. Weights
are safetensors or npz; torch pickles only where a suite ships nothing else, through
torch_weights.py (weights only), and in public mode only for allow-listed releases.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from huggingface_hub import constants
from torch import Tensor

from ..activations import parse_hookpoint
from ..lm import LM
from ..sae import Sae
from .convert import Where
from .fetch import (
    HubError,
    cached_listing,
    check_repo,
    fetch,
    join,
    read_json,
    read_npz,
    read_tensors,
    revision_of,
    safe_path,
)
from .formats import (
    CFG_FILE,
    CONVERTERS,
    LAYOUTS,
    MARKERS,
    Converted,
    detect_format,
    fold_input_scale,
)
from .registry import RELEASES, Release, same_model
from .releases import loadable_ids
from .suites_pickle import detect_pickle
from .torch_weights import PICKLE_SUFFIXES, check_pickle_policy, read_torch

MAX_IDS_CHARS = 4000
"""Longest list of SAE ids accepted (all of a 30-layer release fit)."""


@dataclass(frozen=True)
class SaeSource:
    repo_id: str
    path: str
    """Folder of this SAE inside the repo ("" for the repo root), or its file."""
    revision: str
    """Commit hash of the snapshot the files came from."""
    format: str
    """Its layout key (formats.LAYOUTS)."""
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


def read_weights(path: Path, what: str) -> dict[str, Tensor]:
    """Tensors of a weights file, by its kind: safetensors, npz (no pickles), pickled
    tensors (torch_weights.read_torch)."""
    if path.name.endswith(".npz"):
        return read_npz(path, what)
    if path.name.endswith(PICKLE_SUFFIXES):
        return read_torch(path, what)
    return read_tensors(path, what)


def find_layout(repo_id: str, folder: str, kw: dict, what: str) -> tuple[str, dict | None]:
    """(layout, cfg.json when read) from the files in the folder, for SAEs no release
    describes; "" for a single torch file (its tensor names tell, once read)."""
    if folder.endswith(PICKLE_SUFFIXES):
        return "", {}
    if path := fetch(repo_id, join(folder, CFG_FILE), optional=True, **kw):
        cfg = read_json(path, f"{what}/{CFG_FILE}")
        return detect_format(cfg, what), cfg
    for marker, layout in MARKERS:
        if fetch(repo_id, join(folder, marker), optional=True, **kw):
            return layout, None
    try:  # the plain error says whether the repo or the file is missing
        fetch(repo_id, join(folder, CFG_FILE), **kw)
    except HubError as err:
        found = cached_listing(repo_id, folder, revision=kw["revision"], cache_dir=kw["cache_dir"])
        markers = ", ".join(f"{m} ({layout})" for m, layout in MARKERS)
        raise HubError(f"{err}; no known SAE layout in {what}: looked for {CFG_FILE} "
                       f"(saelens, sparsify), {markers}, or a .pt/.pth file; found "
                       f"{', '.join(found) or 'nothing in the local cache'}") from None
    raise HubError(f"{what}: {CFG_FILE} appeared while it was being looked for; try again")


def read_config(repo_id: str, folder: str, layout: str, kw: dict, what: str) -> dict:
    """The layout's config file ({} where it has none, or an optional one is absent)."""
    spec = LAYOUTS.get(layout)
    if spec is None or not spec.config:
        return {}
    path = fetch(repo_id, join(folder, spec.config), optional=spec.config_optional, **kw)
    return read_json(path, f"{what}/{spec.config}") if path else {}


def with_run_model(repo_id: str, folder: str, cfg: dict, kw: dict, trained_for: str) -> dict:
    """A sparsify cfg with `model` from the training run's config.json one level up
    (optional), else `trained_for`."""
    parent = str(PurePosixPath(folder).parent).strip(".")
    run_path = fetch(repo_id, join(parent, "config.json"), optional=True, **kw)
    run = read_json(run_path, f"{repo_id}/{join(parent, 'config.json')}") if run_path else {}
    return {"model": run.get("model") or trained_for} | cfg


def load_sae(repo_id: str, path: str, *, layout: str | None = None,
             revision: str | None = None, cache_dir: str | Path | None = None,
             token: str | bool | None = None, hook: str = "", trained_for: str = "",
             release: str | None = None, public: bool = False) -> tuple[Converted, SaeSource]:
    """One SAE from `path` (its folder, or its file for single-file layouts) of `repo_id`.

    `layout`: a key of formats.LAYOUTS when the release names it; None: told by the files.
    `hook` names what the SAE reads when its files do not (registry SAE ids); `trained_for`
    names its model when its files do not. `public`: pickles only for allow-listed
    `release`s (torch_weights.check_pickle_policy)."""
    folder, cache = safe_path(path), Path(cache_dir or constants.HF_HUB_CACHE)
    what = f"{repo_id}/{folder}" if folder else repo_id
    kw = dict(revision=revision, cache_dir=cache, token=token)
    if layout is not None and layout not in LAYOUTS:
        raise HubError(f"{what}: unknown layout {layout!r} (known: {', '.join(LAYOUTS)})")
    layout, cfg = (layout, None) if layout else find_layout(repo_id, folder, kw, what)
    weights_name = LAYOUTS[layout].weights if layout else ""
    check_pickle_policy(layout, release, public, weights_file=weights_name or folder)
    if cfg is None:
        cfg = read_config(repo_id, folder, layout, kw, what)
    if layout == "sparsify":
        cfg = with_run_model(repo_id, folder, cfg, kw, trained_for)
    weights = fetch(repo_id, join(folder, weights_name) if weights_name else folder, **kw)
    tensors = read_weights(weights, what)
    layout = layout or detect_pickle(tensors, folder)
    where = Where(repo_id, folder, hook or PurePosixPath(folder).name, trained_for)
    try:
        converted = CONVERTERS[layout](cfg, tensors, where)
    except HubError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise HubError(f"{what}: bad {layout} config ({type(err).__name__}: {err})") from err
    source = SaeSource(repo_id, folder, revision_of(weights), layout,
                       converted.sae.cfg.model_name)
    return converted, source


def check_model(sae: Sae, lm: LM, what: str) -> str | None:
    """A clear error when the SAE cannot read this model; a warning when only shapes fit."""
    try:
        lm.module_for(sae.cfg.hookpoint)
    except ValueError as err:
        raise HubError(f"{what} ({sae.cfg.hookpoint}): {err}") from err
    trained_for = sae.cfg.model_name or "an unnamed model"
    if sae.cfg.d_in != (width := lm.width_of(sae.cfg.reads)):
        raise HubError(f"{what} reads vectors of width {sae.cfg.d_in} but {lm.name} has "
                       f"width {width} at {sae.cfg.reads}: it was trained for {trained_for}")
    if not same_model(sae.cfg.model_name, lm.name):
        return (f"{what} was trained for {trained_for}, not {lm.name}: only the weights' "
                "shape fits, so features may read the activations differently")
    return None


def parse_ids(sae_ids: str | Sequence[str], release: Release | None) -> list[str]:
    """A list, or a comma-separated string; "all" means every SAE of a registry release that
    the app can load (releases.verdict: the others are left out, e.g. embedding SAEs)."""
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
        return loadable_ids(release, [], every=True)
    if not ids:
        raise HubError("name at least one SAE id or hookpoint (folder in the repo)")
    return ids


def release_entry(release: Release, sae_id: str) -> tuple[str, str, float | None]:
    """(path, hook, norm scale) of one SAE of a release, as the release table gives them."""
    entry = release.sae(sae_id)
    return entry.path, entry.hook or sae_id, entry.norm_scale


def load_pretrained(
    source: str, sae_ids: str | Sequence[str], *, lm: LM | None = None,
    revision: str | None = None, cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    norm_scaling_factor: float | Mapping[str, float] | None = None,
    report: Callable[[str, float], None] | None = None, public: bool = False,
) -> PretrainedSet:
    """SAEs from a registry release, a Hub repo id or a local folder, checked against `lm`.

    `sae_ids`: release SAE ids (e.g. `blocks.5.hook_resid_post`) or folders (or files) in
    the repo (e.g. `layers.6.mlp`). Nothing is kept unless every SAE loads. `token` goes to
    every Hub call (None: huggingface_hub's default, the configured token; False: send none).
    `norm_scaling_factor`: one factor for every SAE that expects scaled inputs, or one per
    SAE id; by default the release's own (SAELens's `norm_scaling_factor`). `public`: torch
    pickles only for allow-listed releases.
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
        path, hook, scale = release_entry(release, sae_id) if release else (sae_id, "", None)
        (sae, norm), src = load_sae(
            repo_id, path, layout=release.format if release else None, revision=revision,
            cache_dir=cache_dir, token=token, hook=hook,
            trained_for=release.model if release else "",
            release=release.name if release else None, public=public)
        h = sae.cfg.hookpoint
        if h in saes:
            raise HubError(f"{sae_id} and another SAE both read hookpoint {h}")
        factor = (norm_scaling_factor.get(sae_id) if isinstance(norm_scaling_factor, Mapping)
                  else norm_scaling_factor)
        factor = scale if factor is None else factor  # the release's own scale by default
        if norm == "expected_average_only_in":
            if factor is not None:
                fold_input_scale(sae, factor)
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
