"""Tables and figures of the layer map: plain data in, Plotly and pandas out (no Gradio)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import torch

from sae_core.explore.layermap import LayerMapData
from sae_core.explore.names import FeatureNames

from ..shared.names_view import name_cells
from ..shared.plots import (
    COLORS,
    CONTROL_MODEL,
    accept_lines,
    band_traces,
    layer_heatmap,
    site_lines,
)
from ..shared.sites import hookpoint_at

TASK_NAMES = {"pos": "part of speech", "dep": "dependency relation", "ent": "named entity",
              "shape": "word shape"}
KIND_NAMES = {"sae": "SAE features", "neuron": "raw neurons", "random": "random directions",
              "whitened": "random directions (whitened)",
              "topk_random": "random dictionary through TopK"}


def present_labels(lmap: LayerMapData, task: str) -> list[int]:
    """Label ids that occur in the mapped tokens, most common first."""
    rate = lmap.label_share(task)
    ids = [i for i in rate.argsort(descending=True).tolist() if rate[i] > 0]
    return ids


def heatmap_figure(lmap: LayerMapData, task: str, threshold: float, min_support: int,
                   kind: str = "sae", min_lift: float = 0.0):
    ids = present_labels(lmap, task)
    counts = lmap.heatmap(task, threshold, min_support, kind, min_lift)[:, ids]
    names = [lmap.vocab[task][i] for i in ids]
    title = (f"{KIND_NAMES[kind]} whose {TASK_NAMES[task]} label has consistency ≥ "
             f"{threshold:.2f} (support ≥ {min_support}, lift ≥ {min_lift:g})")
    return layer_heatmap(counts.numpy(), names, lmap.hookpoints, title=title)


def lines_figure(lmap: LayerMapData, task: str, threshold: float, min_support: int,
                 min_lift: float = 0.0, control: LayerMapData | None = None) -> go.Figure:
    """Accepted share per layer and kind, each with its bootstrap band over documents where
    the map has one at these criteria; with `control` (the random-init model's map), its
    SAE features too, dashed."""
    lines, bands = _share_lines(lmap, task, threshold, min_support, min_lift)
    if control is not None and task in control.vocab:
        more, more_bands = _share_lines(control, task, threshold, min_support, min_lift,
                                        kinds=("sae",), suffix=f", {CONTROL_MODEL}")
        lines, bands = lines | more, bands | more_bands
    fig = accept_lines(lmap.hookpoints, {}, title=f"Share of features with a consistent "
                       f"{TASK_NAMES[task]} label (bands: 95% over documents)")
    for i, (name, (hooks, ys)) in enumerate(lines.items()):
        color = COLORS[i % len(COLORS)]
        if bands.get(name):
            band_traces(fig, hooks, bands[name], color, name, scale=100)
        dash = "dash" if name.endswith(CONTROL_MODEL) else None
        site_lines(fig, hooks, [100 * y for y in ys], name, mode="lines+markers",
                   line=dict(color=color, dash=dash), legendgroup=name)
    return fig


def _share_lines(lmap: LayerMapData, task: str, threshold: float, min_support: int,
                 min_lift: float, kinds=None, suffix: str = "") -> tuple[dict, dict]:
    """(name -> (hookpoints, shares), name -> per layer (lo, hi) or None) of `lmap`'s kinds."""
    lines, bands = {}, {}
    for kind in kinds or [k for k in KIND_NAMES if f"{k}/{lmap.hookpoints[0]}/{task}"
                          in lmap.counts]:
        name = KIND_NAMES[kind] + suffix
        lines[name] = (lmap.hookpoints, lmap.accept_share(task, threshold, min_support, kind,
                                                          min_lift))
        bands[name] = lmap.accept_interval(task, threshold, min_support, kind, min_lift)
    return lines, bands


def feature_table(lmap: LayerMapData, task: str, layer, label: str, threshold: float,
                  min_support: int, kind: str = "sae", min_lift: float = 0.0,
                  limit: int = 50, names: FeatureNames | None = None) -> pd.DataFrame:
    """Features of one heatmap cell, most consistent first; with `names`, each feature's
    name and its held-out F1 (controls are not features: no names). `layer` is a layer key
    (ui/shared/sites.py: a number, or e.g. "3 (MLP out)")."""
    hookpoint = hookpoint_at(lmap.hookpoints, layer)
    stats = lmap.stats(kind, hookpoint, task)
    ids = lmap.cell_features(kind, hookpoint, task, label, threshold, min_support,
                             min_lift)[:limit]
    table = pd.DataFrame({
        "feature": ids.tolist(),
        "consistency": [round(float(v), 3) for v in stats.consistency[ids]],
        "support": stats.support[ids].tolist(),
        "lift": [round(float(v), 1) for v in stats.lift[ids]],
    })
    if names is not None and kind == "sae":
        table["name (held-out F1)"] = name_cells(names, hookpoint, ids.tolist())
    return table


def summary_rows(lmap: LayerMapData, threshold: float, min_support: int,
                 min_lift: float = 0.0, control: LayerMapData | None = None) -> pd.DataFrame:
    """Per task and kind: accepted share averaged over layers; with `control`, the
    random-init model's SAE features too."""
    rows = []
    for task in TASK_NAMES:
        row = {"task": TASK_NAMES[task]}
        for kind, name in KIND_NAMES.items():
            if f"{kind}/{lmap.hookpoints[0]}/{task}" in lmap.counts:
                row[name] = _mean_share(lmap, task, threshold, min_support, kind, min_lift)
        if control is not None and task in control.vocab:
            row[f"SAE features, {CONTROL_MODEL}"] = _mean_share(
                control, task, threshold, min_support, "sae", min_lift)
        rows.append(row)
    return pd.DataFrame(rows)


def _mean_share(lmap: LayerMapData, task: str, threshold: float, min_support: int, kind: str,
                min_lift: float) -> str:
    shares = torch.tensor(lmap.accept_share(task, threshold, min_support, kind, min_lift))
    return f"{100 * float(shares.mean()):.1f}%"
