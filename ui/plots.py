"""Plotly figures. Axis titles say what is measured and on what data."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sae_core.activations import layer_of


def quality_by_layer(metrics: dict[str, dict]) -> go.Figure:
    """FVU, CE loss recovered and dead latents per layer, on held-out text."""
    layers = [layer_of(h) for h in metrics]
    rows = list(metrics.values())
    fig = make_subplots(rows=1, cols=3, subplot_titles=(
        "Unexplained variance (FVU, lower is better)",
        "LM loss recovered with the SAE spliced in",
        "Dead latents (% never firing on held-out)",
    ))
    fig.add_scatter(x=layers, y=[m["fvu"] for m in rows], mode="lines+markers", row=1, col=1)
    errors = [m.get("ce_recovered_se") for m in rows]  # absent in older metrics.json
    fig.add_scatter(x=layers, y=[m["ce_recovered"] for m in rows], mode="lines+markers",
                    error_y=dict(array=errors, visible=all(e is not None for e in errors)),
                    row=1, col=2)
    fig.add_scatter(x=layers, y=[100 * m["dead_frac_heldout"] for m in rows],
                    mode="lines+markers", row=1, col=3)
    fig.update_xaxes(title_text="layer")
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(showlegend=False, height=330, margin=dict(t=40, b=40, l=40, r=20))
    return fig


def layer_heatmap(counts_LY, labels: list[str], layers: list[int], *, title: str) -> go.Figure:
    """Layers (rows) x labels (columns): accepted features per cell."""
    fig = go.Figure(go.Heatmap(
        z=counts_LY, x=labels, y=layers, colorscale="Blues",
        hovertemplate="layer %{y}, label %{x}: %{z} features<extra></extra>",
        colorbar=dict(title="features"),
    ))
    fig.update_layout(title=title, height=560, xaxis_title="label", yaxis_title="layer",
                      yaxis=dict(autorange="reversed", dtick=1),
                      margin=dict(t=50, b=60, l=50, r=20))
    return fig


def accept_lines(layers: list[int], shares: dict[str, list[float]], *, title: str) -> go.Figure:
    """Per layer, the share of features accepted, one line per kind (SAE / controls)."""
    fig = go.Figure()
    for name, ys in shares.items():
        fig.add_scatter(x=layers, y=[100 * y for y in ys], mode="lines+markers", name=name)
    fig.update_layout(title=title, height=330, xaxis_title="layer",
                      yaxis_title="% of features accepted", yaxis=dict(rangemode="tozero"),
                      margin=dict(t=50, b=40, l=50, r=20))
    return fig
