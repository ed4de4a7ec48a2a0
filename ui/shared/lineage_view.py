"""Figures of features followed through the layers: plain data in, Plotly out (no Gradio)."""

from __future__ import annotations

import html

import plotly.graph_objects as go

from sae_core.activations import layer_of
from sae_core.explore.feature_path import FeaturePath, PathStep
from sae_core.explore.lineage import LineageData

from .plots import COLORS, CONTROL_MODEL, band_traces, site_lines
from .sites import axis_title, site_label

START_COLOR, PATH_COLOR, STOP_COLOR = "#d62728", "#1f77b4", "#7f7f7f"


def _percent(share: float | None) -> float | None:
    return None if share is None else 100 * share


def turnover_figure(lineage: LineageData, control: LineageData | None = None) -> go.Figure:
    """Per layer: the share of its alive features that have a close partner (decoder cosine
    above the lineage's `close`) in the next layer, and in the layer below, each with its
    band when the layer's features are drawn again (turnover reads decoder weights, not
    documents); with `control` (the random-init model's lineage), its two lines dashed."""
    hooks = lineage.hookpoints
    fig = go.Figure()
    bands = lineage.turnover_bands()
    for lin, suffix, dash in ((lineage, "", None), (control, f", {CONTROL_MODEL}", "dash")):
        if lin is None:
            continue
        shares = lin.turnover()
        for color, key, name in ((COLORS[0], "up", "carried on to the next layer"),
                                 (COLORS[1], "down", "already there in the layer below")):
            if key in bands and lin is lineage:
                band_traces(fig, hooks, bands[key], color, name + suffix, scale=100)
            # one line per site: features are followed within a site (explore/lineage.py)
            site_lines(fig, lin.hookpoints, [_percent(s) for s in shares[key]], name + suffix,
                       mode="lines+markers", line=dict(dash=dash, color=color),
                       legendgroup=name + suffix,
                       hovertemplate=f"layer %{{x}}: %{{y:.1f}}% {name}{suffix}<extra></extra>")
    fig.update_layout(
        title="How much of each layer carries on to the next (bands: 95% range over "
              "features)", height=330,
        xaxis_title=axis_title(hooks),
        yaxis_title=f"% of features (decoder cosine > {lineage.close:g})",
        # from zero, but scaled to the data: a few percent must not look like none
        yaxis=dict(rangemode="tozero"), margin=dict(t=50, b=40, l=50, r=20),
        legend=dict(orientation="h", y=-0.25))
    return fig


def _hover(steps: tuple[PathStep, ...], i: int, start: int, names: dict | None) -> str:
    step = steps[i]
    lines = [f"layer {site_label(step.hookpoint)}, feature {step.feature}"]
    if names and (name := names.get((step.hookpoint, step.feature))):
        lines.append(html.escape(str(name)))
    if i == start:
        lines.append("the feature you asked about")
    else:
        toward = steps[i + 1 if i < start else i - 1]
        lines.append(f"decoder cosine with layer {site_label(toward.hookpoint)}'s "
                     f"feature {toward.feature}: {step.cosine:.2f}")
        if step.jaccard is not None:
            lines.append(f"fires on the same tokens (Jaccard): {step.jaccard:.2f}")
    return "<br>".join(lines)


def path_figure(path: FeaturePath, names: dict[tuple[str, int], str] | None = None
                ) -> go.Figure:
    """The feature's best partner layer after layer (x = layer, one lane), the feature
    itself highlighted; a grey cross where the path stopped early. `names` maps
    (hookpoint, feature) to a short name for the hover text."""
    steps = path.steps
    x = [layer_of(s.hookpoint) for s in steps]
    hover = [_hover(steps, i, path.start, names) for i in range(len(steps))]
    sizes = [22 if i == path.start else 14 for i in range(len(steps))]
    colors = [START_COLOR if i == path.start else PATH_COLOR for i in range(len(steps))]
    fig = go.Figure()
    fig.add_scatter(
        x=x, y=[0] * len(steps), mode="lines+markers+text", name="path",
        text=[str(s.feature) for s in steps], textposition="top center",
        marker=dict(size=sizes, color=colors, line=dict(width=1, color="white")),
        line=dict(color=PATH_COLOR, width=2), hovertext=hover, hoverinfo="text")
    stops = [s for s in (path.stop_down, path.stop_up) if s is not None]
    if stops:
        fig.add_scatter(
            x=[layer_of(s.hookpoint) for s in stops], y=[0] * len(stops), mode="markers",
            name="stopped", marker=dict(symbol="x", size=12, color=STOP_COLOR),
            hovertext=[f"layer {site_label(s.hookpoint)}: no close partner (best decoder "
                       f"cosine {s.best_cosine:.2f})" for s in stops], hoverinfo="text")
    start = steps[path.start]
    fig.update_layout(
        title=f"Layer {site_label(start.hookpoint)}'s feature {start.feature} followed "
              "through the layers", height=220, showlegend=False,
        xaxis=dict(title=axis_title([s.hookpoint for s in steps]), dtick=1),
        yaxis=dict(visible=False, range=[-1, 1.5]),
        margin=dict(t=50, b=40, l=20, r=20))
    return fig
