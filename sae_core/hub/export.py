"""An atlas's SAEs exported in the SAELens layout with a model card, and pushed to the Hub."""

from __future__ import annotations

import json
import math
from pathlib import Path

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError

from ..activations import OUTLIER_FACTOR
from ..atlas.layout import load_atlas
from ..sae import Sae
from .fetch import HubError

EXPORT_ROOT = Path("checkpoints/export")


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
