"""Plotly figures. Axis titles say what is measured and on what data."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sae_core.activations import layer_of

from .sites import axis_title, by_site, site_label

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
CONTROL_MODEL = "random-init model"
"""How the twin atlas through a randomly initialised model is named in the figures."""


def site_lines(fig: go.Figure, hookpoints: list[str], ys: list, name: str = "",
               **scatter) -> None:
    """`ys` (one per hookpoint) over layer numbers: one line per site (residual, MLP out,
    attention out), so a line never joins two sites; the site joins `name` when several."""
    groups = by_site(hookpoints)
    for words, layers, where in groups:
        label = name if len(groups) == 1 else ", ".join(filter(None, (name, words or "residual")))
        error = scatter.get("error_y")
        extra = {} if error is None else {"error_y": {**error, "array": [
            error["array"][i] for i in where]}}
        fig.add_scatter(x=layers, y=[ys[i] for i in where], name=label,
                        **{**scatter, **extra})


def band_traces(fig: go.Figure, hookpoints: list[str], band: list[tuple[float, float]],
                color: str, name: str, scale: float = 1.0) -> None:
    """A shaded band between each layer's (lo, hi), one per site, under the line `name`
    (same colour): a lower edge, then an upper edge filled down to it."""
    rgb = tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))
    for _, layers, where in by_site(hookpoints):
        lo = [None if band[i][0] is None else scale * band[i][0] for i in where]
        hi = [None if band[i][1] is None else scale * band[i][1] for i in where]
        common = dict(x=layers, mode="lines", line=dict(width=0), showlegend=False,
                      legendgroup=name, hoverinfo="skip")
        fig.add_scatter(y=lo, **common)
        fig.add_scatter(y=hi, fill="tonexty", fillcolor=f"rgba{(*rgb, 0.18)}", **common)


def quality_by_layer(metrics: dict[str, dict]) -> go.Figure:
    """FVU, CE loss recovered and dead latents per layer, on held-out text."""
    hooks, rows = list(metrics), list(metrics.values())
    fig = make_subplots(rows=1, cols=3, subplot_titles=(
        "Unexplained variance (FVU, lower is better)",
        "LM loss recovered with the SAE spliced in",
        "Dead latents (% never firing on held-out)",
    ))
    site_lines(fig, hooks, [m["fvu"] for m in rows], mode="lines+markers", row=1, col=1)
    errors = [m.get("ce_recovered_se") for m in rows]  # absent in older metrics.json
    site_lines(fig, hooks, [m["ce_recovered"] for m in rows], mode="lines+markers",
               error_y=dict(array=errors, visible=all(e is not None for e in errors)),
               row=1, col=2)
    site_lines(fig, hooks, [100 * m["dead_frac_heldout"] for m in rows],
               mode="lines+markers", row=1, col=3)
    fig.update_xaxes(title_text=axis_title(hooks))
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(showlegend=len(by_site(hooks)) > 1, height=330,
                      margin=dict(t=40, b=40, l=40, r=20))
    return fig


def layer_heatmap(counts_LY, labels: list[str], hookpoints: list[str], *,
                  title: str) -> go.Figure:
    """Layers (rows) x labels (columns): accepted features per cell; rows are named by
    layer number, with the site where the set reads several (ui/shared/sites.py)."""
    several = len(by_site(hookpoints)) > 1
    layers = [site_label(h) if several else layer_of(h) for h in hookpoints]
    fig = go.Figure(go.Heatmap(
        z=counts_LY, x=labels, y=layers, colorscale="Blues",
        hovertemplate="layer %{y}, label %{x}: %{z} features<extra></extra>",
        colorbar=dict(title="features"),
    ))
    fig.update_layout(title=title, height=560, xaxis_title="label",
                      yaxis_title=axis_title(hookpoints),
                      yaxis=dict(autorange="reversed", dtick=1),
                      margin=dict(t=50, b=60, l=50, r=20))
    return fig


def accept_lines(hookpoints: list[str], shares: dict[str, list[float]], *,
                 title: str) -> go.Figure:
    """Per layer, the share of features accepted, one line per kind (SAE / controls) and
    site."""
    fig = go.Figure()
    for name, ys in shares.items():
        site_lines(fig, hookpoints, [100 * y for y in ys], name, mode="lines+markers")
    fig.update_layout(title=title, height=330, xaxis_title=axis_title(hookpoints),
                      yaxis_title="% of features accepted", yaxis=dict(rangemode="tozero"),
                      margin=dict(t=50, b=40, l=50, r=20))
    return fig
