"""Tables and figures of the layer map: plain data in, Plotly and pandas out (no Gradio)."""

from __future__ import annotations

import pandas as pd
import torch

from sae_core.explore.layermap import LayerMapData
from sae_core.explore.names import FeatureNames

from .names_view import name_cells
from .plots import accept_lines, layer_heatmap
from .sites import hookpoint_at

TASK_NAMES = {"pos": "part of speech", "dep": "dependency relation", "ent": "named entity",
              "shape": "word shape"}
KIND_NAMES = {"sae": "SAE features", "neuron": "raw neurons", "random": "random directions",
              "whitened": "random directions (whitened)"}


def present_labels(lmap: LayerMapData, task: str) -> list[int]:
    """Label ids that occur in the mapped tokens, most common first."""
    rate = lmap.base_rate[task]
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
                 min_lift: float = 0.0):
    shares = {KIND_NAMES[k]: lmap.accept_share(task, threshold, min_support, k, min_lift)
              for k in KIND_NAMES}
    return accept_lines(lmap.hookpoints, shares,
                        title=f"Share of features with a consistent {TASK_NAMES[task]} label")


def feature_table(lmap: LayerMapData, task: str, layer, label: str, threshold: float,
                  min_support: int, kind: str = "sae", min_lift: float = 0.0,
                  limit: int = 50, names: FeatureNames | None = None) -> pd.DataFrame:
    """Features of one heatmap cell, most consistent first; with `names`, each feature's
    name and its held-out F1 (controls are not features: no names). `layer` is a layer key
    (ui/sites.py: a number, or e.g. "3 (MLP out)")."""
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
                 min_lift: float = 0.0) -> pd.DataFrame:
    """Per task and kind: accepted share averaged over layers."""
    rows = []
    for task in TASK_NAMES:
        row = {"task": TASK_NAMES[task]}
        for kind, name in KIND_NAMES.items():
            shares = torch.tensor(lmap.accept_share(task, threshold, min_support, kind, min_lift))
            row[name] = f"{100 * float(shares.mean()):.1f}%"
        rows.append(row)
    return pd.DataFrame(rows)
