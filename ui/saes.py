"""The SAEs tab: trained SAE sets and their quality."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pandas as pd

from sae_core.atlas import ATLAS_ROOT, is_built
from sae_core.plots import quality_by_layer


def list_atlases(root: Path = ATLAS_ROOT) -> list[str]:
    return sorted(str(p) for p in root.glob("*") if is_built(p))


def atlas_summary(folder: str) -> tuple[str, pd.DataFrame, object]:
    """Markdown summary, per-layer metrics table and quality plot of one atlas."""
    if not folder or not is_built(Path(folder)):
        return "No atlas selected.", pd.DataFrame(), None
    info = json.loads((Path(folder) / "atlas.json").read_text())
    metrics = json.loads((Path(folder) / "metrics.json").read_text())
    cfg = info["train_cfg"]
    md = (
        f"**{info['model']}**, {len(metrics)} SAEs ({cfg['architecture']}, "
        f"{cfg['expansion']}x width, k={cfg['k']}), trained on {info['lm_tokens']:,} tokens "
        f"of `{info['corpus']}` in {info['train_seconds']:.0f} s. Metrics on "
        f"{next(iter(metrics.values()))['heldout_tokens']:,} held-out tokens."
    )
    table = pd.DataFrame([
        {"hookpoint": h, "FVU": round(m["fvu"], 4), "L0": round(m["l0"], 1),
         "dead % (held-out)": round(100 * m["dead_frac_heldout"], 2),
         "dead % (train)": round(100 * m.get("dead_frac_train", float("nan")), 2),
         "CE loss recovered": round(m["ce_recovered"], 4),
         "dropped tokens": m.get("dropped_tokens", 0)}
        for h, m in metrics.items()
    ])
    return md, table, quality_by_layer(metrics)


def atlas_choices(atlas: Path) -> list[str]:
    return sorted({*list_atlases(), *([str(atlas)] if is_built(atlas) else [])})


def build_saes_tab(picker: gr.Dropdown) -> None:
    """`picker` (above the tabs) holds the active SAE set's folder."""
    with gr.Tab("SAEs"):
        gr.Markdown("Trained SAE sets and their quality on text they never saw. "
                    "*FVU*: share of the layer's variation the SAE misses. *L0*: features "
                    "active per token. *CE loss recovered*: how much of the model's ability "
                    "to predict the next word survives when the SAE replaces the layer.")
        md, df, fig = atlas_summary(picker.value)
        summary = gr.Markdown(md)
        plot = gr.Plot(fig)
        table = gr.Dataframe(df, interactive=False)
        picker.change(atlas_summary, picker, [summary, table, plot])
