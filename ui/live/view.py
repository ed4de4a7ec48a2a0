"""Figures and tables of a live view for the app: plain data in, Plotly and pandas out."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from sae_core.explore.layermap import LayerMapData
from sae_core.explore.live import LiveView
from sae_core.explore.names import FeatureNames
from sae_core.explore.search import LOUD, feature_labels

from ..shared.names_view import name_cells
from ..shared.sites import layer_key, site_label

ROW_PX = 20
"""Heatmap height per token."""


def show_token(piece: str) -> str:
    """A token piece made visible: whitespace as symbols, "" (the tail of a character split
    over several tokens) as "(cont.)", HTML escaped for Plotly."""
    if piece == "":
        return "(cont.)"
    shown = piece.replace("\n", "↵").replace("\t", "⇥").replace(" ", "␣")
    return html.escape(shown)


def layer_names(view: LiveView) -> list[str]:
    return [site_label(h) for h in view.hookpoints]


def _labels_TL(view: LiveView, lmap: LayerMapData | None,
               names: FeatureNames | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, layers) label and name of each strongest feature ("" if none)."""
    idx_TL = view.strongest()[0]
    labels = np.full(idx_TL.shape, "", dtype=object)
    named = np.full(idx_TL.shape, "", dtype=object)
    for j, h in enumerate(view.hookpoints):
        ids = sorted({int(f) for f in idx_TL[:, j].tolist() if f >= 0})
        by_id = dict(zip(ids, zip(feature_labels(lmap, h, ids), name_cells(names, h, ids),
                                  strict=True), strict=True))
        for t, f in enumerate(idx_TL[:, j].tolist()):
            labels[t, j], named[t, j] = by_id.get(int(f), ("", ""))
    return labels, named


def heatmap(view: LiveView, lmap: LayerMapData | None,
            names: FeatureNames | None = None) -> go.Figure:
    """Tokens (rows, in reading order) x layers: colour = the strongest feature's activation
    over the layer's typical norm; hover gives token, layer, feature, activation, label.
    Tokens the SAE skips (position 0, massive activations) are grey."""
    idx_TL, act_TL = (t.numpy() for t in view.strongest())
    rel_TL = act_TL / np.asarray(view.medians, dtype=np.float32)[None, :]
    flagged = view.flagged_TL.numpy()
    z = np.where((idx_TL >= 0) & ~flagged, rel_TL, np.nan)
    # Loud tokens (secondary sinks, up to 10x the typical norm) would set the colour range
    # and leave every other cell dark: scale to the others; loud cells saturate.
    quiet = view.norm_TL.numpy() <= LOUD * np.asarray(view.medians)[None, :]
    zmax = np.nanmax(np.where(quiet, z, np.nan)) if np.isfinite(z[quiet]).any() else None
    tokens = [show_token(p) for p in view.pieces]
    labels, named = _labels_TL(view, lmap, names)
    n_tok, n_lay = idx_TL.shape
    custom = np.empty((n_tok, n_lay, 7), dtype=object)
    custom[..., 0] = np.array(tokens, dtype=object)[:, None]
    custom[..., 1] = np.where(idx_TL >= 0, idx_TL, "none").astype(object)
    custom[..., 2] = np.round(act_TL, 2)
    custom[..., 3] = labels
    custom[..., 4] = np.round(view.norm_TL.numpy() / np.asarray(view.medians)[None, :], 1)
    custom[..., 5] = np.vectorize(html.escape, otypes=[object])(named) if named.size else named
    names = layer_names(view)
    custom[..., 6] = np.array(names, dtype=object)[None, :]
    x = list(range(n_lay))
    y = list(range(n_tok))
    fig = go.Figure(go.Heatmap(
        z=z, x=x, y=y, customdata=custom, colorscale="Viridis", zmin=0, zmax=zmax,
        colorbar=dict(title="activation /<br>typical norm"),
        hovertemplate=("token %{y}: %{customdata[0]}<br>layer %{customdata[6]}: "
                       "feature %{customdata[1]}<br>activation %{customdata[2]} "
                       "(%{z:.2f} of typical norm)"
                       "<br>name: %{customdata[5]}<br>label: %{customdata[3]}"
                       "<br>token norm: %{customdata[4]}x typical"
                       "<extra></extra>"),
    ))
    if flagged.any():
        fig.add_trace(go.Heatmap(
            z=np.where(flagged, 1.0, np.nan), x=x, y=y, customdata=custom, showscale=False,
            colorscale=[[0, "#bbbbbb"], [1, "#bbbbbb"]],
            hovertemplate=("token %{y}: %{customdata[0]}<br>layer %{customdata[6]}: massive "
                           "activation (norm %{customdata[4]}x typical); the SAE skips such tokens"
                           "<extra></extra>"),
        ))
    fig.update_layout(
        height=max(260, ROW_PX * n_tok + 120), margin=dict(t=40, b=40, l=10, r=10),
        title="Strongest feature per token and layer (hover for the feature and its label)",
        xaxis=dict(title="layer", tickvals=x, ticktext=names, side="top"),
        yaxis=dict(autorange="reversed", tickvals=y, ticktext=[f"{t}  {i}" for i, t in
                                                               enumerate(tokens)]),
    )
    return fig


def token_choices(view: LiveView) -> list[tuple[str, int]]:
    """(shown text, token index) pairs for a token picker."""
    return [(f"{i}: {show_token(p)}", i) for i, p in enumerate(view.pieces)]


def token_table(view: LiveView, token: int, lmap: LayerMapData | None,
                per_layer: int = 3, names: FeatureNames | None = None) -> pd.DataFrame:
    """The chosen token's `per_layer` strongest features at each layer, with labels and
    names (a "name" column only when the atlas has names)."""
    if not 0 <= token < view.n_tokens:
        raise ValueError(f"token {token} out of range: the text has tokens 0..{view.n_tokens - 1}")
    rows = []
    for j, h in enumerate(view.hookpoints):
        layer = layer_key(h)
        if bool(view.flagged_TL[token, j]):
            rows.append({"layer": layer, "feature": "", "rank": "", "activation": "",
                         "of typical norm": "", "name": "",
                         "label": "massive activation: not read by the SAE"})
            continue
        ids = [int(f) for f in view.top_idx_TLK[token, j, :per_layer].tolist() if f >= 0]
        cells = zip(ids, feature_labels(lmap, h, ids), name_cells(names, h, ids), strict=True)
        for r, (f, label, name) in enumerate(cells):
            act = float(view.top_act_TLK[token, j, r])
            rows.append({"layer": layer, "feature": f, "rank": r + 1,
                         "activation": round(act, 2),
                         "of typical norm": round(act / view.medians[j], 3), "name": name,
                         "label": label})
    table = pd.DataFrame(rows)
    return table if names is not None else table.drop(columns="name", errors="ignore")
