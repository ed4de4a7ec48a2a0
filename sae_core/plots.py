"""Plotly figures. Axis titles say what is measured and on what data."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .lm import parse_hookpoint


def quality_by_layer(metrics: dict[str, dict]) -> go.Figure:
    """FVU, CE loss recovered and dead latents per layer, on held-out text."""
    layers = [parse_hookpoint(h)[0] for h in metrics]
    rows = list(metrics.values())
    fig = make_subplots(rows=1, cols=3, subplot_titles=(
        "Unexplained variance (FVU, lower is better)",
        "LM loss recovered with the SAE spliced in",
        "Dead latents (% never firing on held-out)",
    ))
    fig.add_scatter(x=layers, y=[m["fvu"] for m in rows], mode="lines+markers", row=1, col=1)
    fig.add_scatter(x=layers, y=[m["ce_recovered"] for m in rows], mode="lines+markers",
                    row=1, col=2)
    fig.add_scatter(x=layers, y=[100 * m["dead_frac_heldout"] for m in rows],
                    mode="lines+markers", row=1, col=3)
    fig.update_xaxes(title_text="layer")
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(showlegend=False, height=330, margin=dict(t=40, b=40, l=40, r=20))
    return fig
