"""Pretrained SAEs as an atlas folder.

A pretrained atlas has the layout of a trained one (atlas/layout.py), so every tab reads it
unchanged. Its atlas.json holds: model (the LM it runs on),
corpus, seq_len, hookpoints, heldout_windows (the held-out split of `build_atlas`, so the
metrics compare with trained sets), `train_cfg` with only `outlier_factor` (the token filter
every reader applies; how the SAEs were trained is known only through `source`), and
`source` (repo, release, revision, SAE folders, formats, the model they were trained for).
Each SAE's metadata gets `median_norm`, measured on a few corpus windows.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import torch

from ..activations import OUTLIER_FACTOR
from ..atlas.evaluate import evaluate_atlas
from ..atlas.info import AtlasInfo
from ..atlas.layout import ATLAS_ROOT
from ..atlas.writing import atlas_lock, staging_dir, swap_in, write_atlas
from ..corpus import load_texts, split_ids, token_windows
from ..lm import LM, load_named
from ..norms import residual_norms
from ..progress import Report
from .fetch import HubError
from .formats import fold_input_scale
from .load import PretrainedSet, load_pretrained
from .registry import slug


def write_pretrained_atlas(
    pset: PretrainedSet, lm: LM, out: Path, *, corpus: str = "default", seq_len: int = 256,
    held_out: int = 64, sample_windows: int = 16, report: Report | None = None,
) -> tuple[Path, tuple[str, ...]]:
    """Measure, evaluate and write `pset` as the atlas `out`; (folder, warnings).

    The folder is written under the atlas's lock into its staging folder and swapped in only
    when complete (atlas/writing.py), so a failure leaves nothing that looks like an atlas.
    Pending input scales are folded into the SAEs (in place), estimated as SAELens does:
    sqrt(d_in) / mean input norm."""
    out = Path(out)
    if out.exists():
        raise HubError(f"{out} already exists: pick another name")
    warns = list(pset.warnings)
    windows = token_windows(lm.tokenizer, load_texts(corpus), seq_len)
    train_ids, test_ids = split_ids(len(windows), held_out)
    train_w, test_w = windows[train_ids], windows[test_ids]
    n_pick = min(sample_windows, len(train_w))
    pick = torch.linspace(0, len(train_w) - 1, n_pick).long()  # cpu: rows of CPU windows
    if report:
        report(f"measuring activation norms on {len(pick)} corpus windows", 0.0)
    norms = residual_norms(lm, list(pset.saes), train_w[pick], outlier_factor=OUTLIER_FACTOR)
    for h, sae in pset.saes.items():
        if h in pset.needs_scale:
            fold_input_scale(sae, math.sqrt(sae.cfg.d_in) / norms[h][1])
            warns.append(f"{h}: the SAE expects inputs scaled to norm sqrt(d_in); the factor "
                         f"{sae.metadata['norm_scaling_factor']:.4g} was estimated on `{corpus}`")
        sae.metadata |= {"median_norm": norms[h][0], "outlier_factor": OUTLIER_FACTOR,
                         "median_windows": len(pick)}
    metrics = evaluate_atlas(lm, pset.saes, {h: n[0] for h, n in norms.items()}, test_w,
                             outlier_factor=OUTLIER_FACTOR, report=report)
    info = AtlasInfo(
        model=lm.name, corpus=corpus, seq_len=seq_len, hookpoints=tuple(pset.saes),
        heldout_windows=held_out, heldout_ids=tuple(test_ids.tolist()),
        train_windows=len(train_w), train_cfg={"outlier_factor": OUTLIER_FACTOR},
        source={
            "repo_id": pset.repo_id, "release": pset.release, "revision": pset.revision,
            "paths": {h: s.path for h, s in pset.sources.items()},
            "formats": sorted({s.format for s in pset.sources.values()}),
            "trained_for": sorted({s.trained_for for s in pset.sources.values()}),
        },
        warnings=tuple(warns),
    )
    with atlas_lock(out):
        if out.exists():
            raise HubError(f"{out} already exists: pick another name")
        staging = staging_dir(out)
        shutil.rmtree(staging, ignore_errors=True)  # a failed write's leftovers
        try:
            write_atlas(staging, pset.saes, info, lambda info: (metrics, info))
            swap_in(staging, out)
        except OSError as err:
            raise HubError(f"could not write the new atlas {out}: {err}") from err
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return out, tuple(warns)


MAX_NAME_CHARS = 100


def atlas_folder(root: Path | str, name: str) -> Path:
    """The folder `root/<slug of name>`; HubError for a name that is no text, too long, or
    that would lead out of `root` (slug keeps none: no "/", no leading dot)."""
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS:
        raise HubError(f"the name of the new set must be text of 1 to {MAX_NAME_CHARS} "
                       f"characters, got {name!r:.40}")
    out = Path(root) / slug(name)
    if out.resolve().parent != Path(root).resolve():
        raise HubError(f"the name {name!r:.40} leads out of {root}")
    return out


def default_name(source: str, sae_ids: str, model: str, revision: str | None = None) -> str:
    key = json.dumps([str(source).strip(), str(sae_ids).strip(), str(model), revision])
    return f"hub-{slug(str(source)[:200])[:60]}-{hashlib.sha1(key.encode()).hexdigest()[:6]}"


def load_pretrained_atlas(
    source: str, sae_ids: str, *, model: str, lm: LM | None = None, name: str | None = None,
    root: Path = ATLAS_ROOT, revision: str | None = None, cache_dir: str | Path | None = None,
    token: str | bool | None = None, corpus: str = "default", seq_len: int = 256,
    held_out: int = 64, report: Report | None = None, public: bool = False,
) -> tuple[Path, tuple[str, ...]]:
    """Fetch SAEs (registry release, repo id), check them against `model` (`lm` when it is
    loaded already), write an atlas.

    `token` goes to every Hub call (None: huggingface_hub's default, the configured token;
    False: send none). `public`: torch-pickled weights only for allow-listed releases.
    Returns (atlas folder, warnings); raises HubError (a ValueError) with a clear message."""
    out = atlas_folder(root, name or default_name(source, sae_ids, model, revision))
    if out.exists():
        raise HubError(f"{out} already exists: pick another name")
    if lm is None:
        if report:
            report(f"loading the model {model}", 0.0)
        lm = load_named(model, token=token)
    pset = load_pretrained(source, sae_ids, lm=lm, revision=revision, cache_dir=cache_dir,
                           token=token, report=report, public=public)
    return write_pretrained_atlas(pset, lm, out, corpus=corpus, seq_len=seq_len,
                                  held_out=held_out, report=report)
