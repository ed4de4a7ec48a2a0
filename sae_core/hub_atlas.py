"""Pretrained SAEs as an atlas folder; any atlas exported in the SAELens layout and pushed.

A pretrained atlas has the layout of a trained one (see atlas.py), so every tab reads it
through `session.open_atlas` unchanged. Its atlas.json holds: model (the LM it runs on),
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
import uuid
from pathlib import Path

import torch
from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError

from . import session
from .atlas import ATLAS_ROOT, Report, evaluate_atlas, load_atlas
from .corpus import load_texts, split_windows, token_windows
from .evaluate import residual_norms
from .hub import HubError, PretrainedSet, fold_input_scale, load_pretrained
from .hub_registry import slug
from .lm import LM
from .sae import Sae

OUTLIER_FACTOR = 10.0
EXPORT_ROOT = Path("checkpoints/export")


def write_pretrained_atlas(
    pset: PretrainedSet, lm: LM, out: Path, *, corpus: str = "default", seq_len: int = 256,
    held_out: int = 64, sample_windows: int = 16, report: Report | None = None,
) -> tuple[Path, tuple[str, ...]]:
    """Measure, evaluate and write `pset` as the atlas `out`; (folder, warnings).

    The folder is assembled in a temporary folder and moved into place only when complete,
    so a failure leaves nothing that looks like an atlas. Pending input scales are folded
    into the SAEs (in place), estimated as SAELens does: sqrt(d_in) / mean input norm."""
    out = Path(out)
    if out.exists():
        raise HubError(f"{out} already exists: pick another name")
    warns = list(pset.warnings)
    windows = token_windows(lm.tokenizer, load_texts(corpus), seq_len)
    train_w, test_w = split_windows(windows, held_out)
    pick = torch.linspace(0, len(train_w) - 1, min(sample_windows, len(train_w))).long()
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
    info = {
        "model": lm.name, "corpus": corpus, "seq_len": seq_len, "hookpoints": list(pset.saes),
        "heldout_windows": held_out, "train_cfg": {"outlier_factor": OUTLIER_FACTOR},
        "source": {
            "repo_id": pset.repo_id, "release": pset.release, "revision": pset.revision,
            "paths": {h: s.path for h, s in pset.sources.items()},
            "formats": sorted({s.format for s in pset.sources.values()}),
            "trained_for": sorted({s.trained_for for s in pset.sources.values()}),
        },
        "warnings": warns,
    }
    tmp = out.parent / "_incoming" / f"{out.name}-{uuid.uuid4().hex[:8]}"
    try:
        for h, sae in pset.saes.items():
            sae.save(tmp / h, extra_metadata=sae.metadata)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1))
        (tmp / "atlas.json").write_text(json.dumps(info, indent=1))
        try:
            tmp.rename(out)
        except OSError as err:
            raise HubError(f"could not move the new atlas into {out}: {err}") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if tmp.parent.exists() and not any(tmp.parent.iterdir()):
            tmp.parent.rmdir()
    return out, tuple(warns)


def default_name(source: str, sae_ids: str, model: str, revision: str | None = None) -> str:
    key = json.dumps([source.strip(), sae_ids.strip(), model, revision])
    return f"hub-{slug(source)[:60]}-{hashlib.sha1(key.encode()).hexdigest()[:6]}"


def load_pretrained_atlas(
    source: str, sae_ids: str, *, model: str, name: str | None = None,
    root: Path = ATLAS_ROOT, revision: str | None = None, cache_dir: str | Path | None = None,
    token: str | None = None, corpus: str = "default", seq_len: int = 256,
    held_out: int = 64, report: Report | None = None,
) -> tuple[Path, tuple[str, ...]]:
    """Fetch SAEs (registry release, repo id), check them against `model`, write an atlas.

    Returns (atlas folder, warnings); raises HubError (a ValueError) with a clear message."""
    out = Path(root) / (slug(name) if name else default_name(source, sae_ids, model, revision))
    if out.exists():
        raise HubError(f"{out} already exists: pick another name")
    if report:
        report(f"loading the model {model}", 0.0)
    lm = session.model(model)
    pset = load_pretrained(source, sae_ids, lm=lm, revision=revision, cache_dir=cache_dir,
                           token=token, report=report)
    return write_pretrained_atlas(pset, lm, out, corpus=corpus, seq_len=seq_len,
                                  held_out=held_out, report=report)


# ---- export and push -------------------------------------------------------------------

def model_card(info: dict, metrics: dict[str, dict], saes: dict[str, Sae],
               repo_id: str = "<repo_id>") -> str:
    """README.md for an exported set: model, hookpoints, width, k, tokens, measured metrics."""
    src, cfg = info.get("source"), info.get("train_cfg", {})
    origin = (f"loaded from `{src['repo_id']}` (revision `{src['revision']}`, trained for "
              f"{', '.join(src['trained_for']) or 'an unnamed model'})" if src else
              f"trained by SAE Atlas on {info.get('lm_tokens', 0):,} tokens of "
              f"`{info['corpus']}` (settings: `{json.dumps(cfg)}`)")
    rows = []
    for h, sae in saes.items():
        m, c = metrics.get(h, {}), sae.cfg
        k = str(c.k) if c.architecture == "topk" else "-"
        rows.append(f"| `{h}` | {c.architecture} | {c.d_sae} | {k} | {m.get('fvu', math.nan):.4f} "
                    f"| {m.get('l0', math.nan):.1f} | {100 * m.get('dead_frac_heldout', 0):.2f} "
                    f"| {m.get('ce_recovered', math.nan):.4f} |")
    tokens = next(iter(metrics.values()), {}).get("heldout_tokens", 0)
    base = f"base_model: {info['model']}\n" if "/" in info["model"] else ""
    first = next(iter(saes), "layers.0")
    return f"""---
library_name: saelens
tags: [sparse-autoencoder, saelens, sae-atlas]
{base}---
# Sparse autoencoders for {info['model']}

{len(saes)} SAEs, {origin}. Each folder holds one SAE in the SAELens layout (`cfg.json` +
`sae_weights.safetensors`, tensors `W_enc (d_in, d_sae)`, `b_enc`, `W_dec (d_sae, d_in)`,
`b_dec`). A folder `layers.N` reads the residual stream after block N (Hugging Face
`hidden_states[N+1]`, TransformerLens `blocks.N.hook_resid_post`); `layers.N.mlp` reads block
N's MLP output (`blocks.N.hook_mlp_out`). `cfg.json` metadata holds `median_norm`, the
typical activation norm there.

| folder | architecture | width | k | FVU | L0 | dead % | CE loss recovered |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Metrics on {tokens:,} held-out tokens of `{info['corpus']}` (windows of {info['seq_len']}
tokens), without position 0 and without tokens whose norm exceeds
{cfg.get('outlier_factor', OUTLIER_FACTOR):g}x the layer's median (massive activations).
FVU: share of variance the SAE misses. L0: active latents per token. CE loss recovered:
share of the LM loss gap (SAE spliced in vs the layer zeroed) the SAE closes.

```python
from sae_lens import SAE
sae = SAE.from_pretrained("{repo_id}", "{first}")
```
"""


def export_saelens(atlas: Path, out: Path | None = None, *, repo_id: str = "<repo_id>") -> Path:
    """Write an atlas's SAEs in the SAELens layout, plus a README.md model card."""
    info, metrics, saes = load_atlas(Path(atlas))
    out = Path(out) if out else EXPORT_ROOT / Path(atlas).name
    if out.exists() and any(out.iterdir()):
        raise HubError(f"{out} exists and is not empty: pick another folder")
    for h, sae in saes.items():
        sae.save(out / h, extra_metadata=sae.metadata)
    (out / "README.md").write_text(model_card(info, metrics, saes, repo_id))
    return out


def push_to_hub(folder: Path, repo_id: str, token: str | None = None, *,
                private: bool = False) -> str:
    """Upload an exported folder to the Hub (needs a token); returns the commit URL."""
    folder = Path(folder)
    if not (folder / "README.md").exists() or not any(folder.glob("*/cfg.json")):
        raise HubError(f"{folder} is not an exported SAE set (README.md + */cfg.json)")
    token = token or get_token()
    if not token:
        raise HubError("no Hugging Face token is configured (set HF_TOKEN or run "
                       "`hf auth login`); nothing was pushed")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, exist_ok=True, private=private)
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder,
                                   commit_message="SAEs exported by SAE Atlas")
    except (HfHubHTTPError, ValueError) as err:
        raise HubError(f"could not push to {repo_id!r}: {err}") from err
    return str(commit.commit_url)
