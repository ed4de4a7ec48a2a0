"""An atlas's SAEs exported in the SAELens layout with a model card, and pushed to the Hub.

`model_card` is the one card writer: an exported set's README.md here, a published whole
atlas's in `atlas_repo`."""

from __future__ import annotations

import json
import math
from pathlib import Path

from huggingface_hub import HfApi, ModelCard, ModelCardData, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id

from ..atlas.info import AtlasInfo
from ..atlas.layout import load_atlas
from ..atomic import write_text
from ..config import SaeConfig
from ..metrics import format_with_error
from .fetch import HubError, check_repo

EXPORT_ROOT = Path("checkpoints/export")
CARD_TAGS = ("sparse-autoencoder", "saelens", "sae-atlas")
ATLAS_TAG = "sae-atlas-prebuilt"
"""Tagged on a repo that holds a whole atlas (layer map, feature index), not only SAEs."""
ATLAS_REPO_ENV = "SAE_ATLAS_REPO"
"""The app takes its atlas from the Hub repo (USER/REPO[@revision]) this names."""


def hub_model_id(name: str) -> str | None:
    """`name` when it reads as a Hub model id (namespace/name), None for a local folder."""
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def model_card(info: AtlasInfo, metrics: dict[str, dict], cfgs: dict[str, SaeConfig],
               repo_id: str = "<repo_id>", *, atlas: dict[str, str] | None = None) -> ModelCard:
    """The README.md of an exported set or a published atlas: model, hookpoints, width, k,
    tokens, measured metrics. `atlas` (part -> what it is) makes it an atlas's card: it
    lists those parts and says how the app loads the repo."""
    tags = [*CARD_TAGS, *([ATLAS_TAG] if atlas else [])]
    data = ModelCardData(library_name="saelens", tags=tags,
                         base_model=hub_model_id(info.model))
    what = f"An SAE Atlas atlas for {info.model}" if atlas else \
        f"Sparse autoencoders for {info.model}"
    body = f"# {what}\n\n{_saes_section(info, metrics, cfgs, repo_id)}"
    if atlas:
        body += _atlas_section(atlas, repo_id)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def _origin(info: AtlasInfo) -> str:
    src, cfg = info.source, info.train_cfg
    if src:
        return (f"loaded from `{src['repo_id']}` (revision `{src['revision']}`, trained for "
                f"{', '.join(src['trained_for']) or 'an unnamed model'})")
    return (f"trained by SAE Atlas on {info.lm_tokens or 0:,} tokens of "
            f"`{info.corpus}` (settings: `{json.dumps(cfg)}`)")


def _saes_section(info: AtlasInfo, metrics: dict[str, dict], cfgs: dict[str, SaeConfig],
                  repo_id: str) -> str:
    rows = []
    for h, c in cfgs.items():
        m = metrics.get(h, {})
        k = str(c.k) if c.architecture == "topk" else "-"
        rows.append(f"| `{h}` | {c.architecture} | {c.d_sae} | {k} | {m.get('fvu', math.nan):.4f} "
                    f"| {m.get('l0', math.nan):.1f} | {100 * m.get('dead_frac_heldout', 0):.2f} "
                    f"| {format_with_error(m.get('ce_recovered'), m.get('ce_recovered_se'))} |")
    tokens = next(iter(metrics.values()), {}).get("heldout_tokens", 0)
    factor = info.outlier_factor
    first = next(iter(cfgs), "layers.0")
    return f"""{len(cfgs)} SAEs, {_origin(info)}. Each folder holds one SAE in the
SAELens layout (`cfg.json` + `sae_weights.safetensors`, tensors `W_enc (d_in, d_sae)`,
`b_enc`, `W_dec (d_sae, d_in)`, `b_dec`). A folder `layers.N` reads the residual stream
after block N (Hugging Face `hidden_states[N+1]`, TransformerLens
`blocks.N.hook_resid_post`); `layers.N.mlp` reads block N's MLP output
(`blocks.N.hook_mlp_out`). `cfg.json` metadata holds `median_norm`, the typical activation
norm there.

| folder | architecture | width | k | FVU | L0 | dead % | CE loss recovered |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Metrics on {tokens:,} held-out tokens of `{info.corpus}` (windows of {info.seq_len}
tokens), without position 0 and without tokens whose norm exceeds
{factor:g}x the layer's median (massive activations).
FVU: share of variance the SAE misses. L0: active latents per token. CE loss recovered:
share of the LM loss gap (SAE spliced in vs the layer zeroed) the SAE closes, ± one
standard error across held-out windows where measured.

```python
from sae_lens import SAE
sae = SAE.from_pretrained("{repo_id}", "{first}")
```
"""


def _atlas_section(parts: dict[str, str], repo_id: str) -> str:
    listed = "\n".join(f"- **{part}**: {what}" for part, what in parts.items())
    return f"""
## A prebuilt SAE Atlas atlas

This repo is a whole atlas of SAE Atlas, the app that shows what each layer of a language
model computes: beside the SAEs it holds

- **atlas info**: `atlas.json` (model, corpus, training settings) and `metrics.json`
{listed}

The SAE Atlas app takes it from the Hub instead of building it (about 20 minutes on
2 CPU cores):

```bash
{ATLAS_REPO_ENV}={repo_id} python app.py        # or {repo_id}@<revision>
```

On a Hugging Face Space, list the repo under `preload_from_hub` in the Space's README front
matter as well, so it is in the Hub cache when the Space starts and loads offline.
"""


def export_saelens(atlas: Path, out: Path | None = None, *, repo_id: str = "<repo_id>") -> Path:
    """Write an atlas's SAEs in the SAELens layout, plus a README.md model card."""
    info, metrics, saes, _ = load_atlas(Path(atlas))
    out = Path(out) if out else EXPORT_ROOT / Path(atlas).name
    if out.exists() and any(out.iterdir()):
        raise HubError(f"{out} exists and is not empty: pick another folder")
    for h, sae in saes.items():
        sae.save(out / h, extra_metadata=sae.metadata)
    card = model_card(info, metrics, {h: s.cfg for h, s in saes.items()}, repo_id)
    write_text(out / "README.md", str(card))
    return out


def push_to_hub(folder: Path, repo_id: str, token: str | None = None, *,
                private: bool = False) -> str:
    """Upload an exported folder to the Hub (needs a token); returns the commit URL. The
    repo id is checked before anything is sent."""
    repo_id, folder = check_repo(repo_id), Path(folder)
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
