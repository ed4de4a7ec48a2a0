"""Feature pages as figures, tables and HTML: plain data in, no Gradio here."""

from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from sae_core.explore.feature_page import FeaturePage, Snippet
from sae_core.hub.releases import neuronpedia_url

from ..layer_map.view import TASK_NAMES
from ..shared.sites import site_label

DENSE = 0.1
"""Features firing on more than 10% of tokens are called dense."""
RARE = 1e-4


def merged_pieces(snippet: Snippet) -> list[tuple[str, float, bool]]:
    """(text, activation, is_peak) per shown piece: tokens with no text of their own (the
    rest of a character split over tokens) merge into the piece before, at the max of their
    activations, so the shade of an emoji reflects all of its tokens."""
    out: list[list] = []
    for i, (piece, act) in enumerate(zip(snippet.pieces, snippet.acts, strict=True)):
        if piece == "" and out:
            out[-1][1] = max(out[-1][1], act)
            out[-1][2] |= i == snippet.peak
        else:
            out.append([piece, act, i == snippet.peak])
    return [tuple(p) for p in out]


def _visible(text: str) -> str:
    """Whitespace that would vanish in a line of HTML made visible."""
    return text.replace("\n", "↵").replace("\t", "⇥")


def snippet_html(snippet: Snippet, scale: float) -> str:
    """One snippet as spans shaded by activation / scale; hover shows each token's value."""
    spans = []
    for text, act, is_peak in merged_pieces(snippet):
        alpha = min(max(act / scale, 0.0), 1.0) if scale > 0 else 0.0
        style = f"background: rgba(255, 120, 0, {alpha:.2f});"
        if is_peak:
            style += " outline: 1px solid #b34700;"
        title = html.escape(f"{text!r}: {act:.3g}", quote=True)
        spans.append(f'<span style="{style}" title="{title}">'
                     f"{html.escape(_visible(text))}</span>")
    head = f"{snippet.value:.2f}"
    if snippet.quantile is not None:
        head = f"q{round(100 * snippet.quantile)} · " + head
    return ('<div style="display: flex; font-family: monospace; margin: 2px 0;">'
            f'<div style="color: #777; flex: 0 0 8em;">{head}</div>'
            f'<div style="white-space: pre-wrap;">{"".join(spans)}</div></div>')


def snippets_html(page: FeaturePage) -> str:
    """Top contexts, then the quantile samples; shades relative to the top activation."""
    if page.dead:
        return (f"<p>This feature never fired on the {page.n_tokens:,} indexed tokens, so "
                "there are no examples to show.</p>")
    scale = page.max_act
    parts = ["<h4>Top activations</h4>", *(snippet_html(s, scale) for s in page.top)]
    if page.samples:
        parts += ["<h4>Weaker activations (quantiles of its contexts)</h4>",
                  *(snippet_html(s, scale) for s in page.samples)]
    return "\n".join(parts)


def summary_markdown(page: FeaturePage, name_line: str = "", neuronpedia: str = "") -> str:
    """`name_line`: the feature's name and score (names_view.name_markdown), if it has one;
    `neuronpedia`: the Neuronpedia id of its SAE (a pretrained release's), if it has one."""
    layer = site_label(page.hookpoint)
    lines = [f"### Layer {layer}, feature {page.feature}", *([name_line] if name_line else [])]
    if neuronpedia:
        url = neuronpedia_url(neuronpedia, page.feature)
        lines.append(f"This SAE is on Neuronpedia: [see this feature there]({url}) "
                     "(its dashboard, explanations and activations on their corpus).")
    if page.dead:
        lines.append(f"**Dead here:** it never fired on the {page.n_tokens:,} indexed tokens.")
    else:
        lines.append(
            f"Fires on **{100 * page.density:.3g}%** of {page.n_tokens:,} indexed tokens "
            f"({page.n_fire:,} tokens in {page.n_contexts:,} passages); strongest "
            f"activation {page.max_act:.2f}.")
    if page.labels:
        cells = [f"{TASK_NAMES.get(lab.task, lab.task)}: **{lab.label}** "
                 f"({100 * lab.consistency:.0f}% of {lab.support} firings, lift "
                 f"{lab.lift:.1f})" for lab in page.labels]
        lines.append("Layer-map labels: " + "; ".join(cells) + ".")
    else:
        lines.append("No layer-map label (no layer map, or it never fired on labelled text).")
    return "\n\n".join(lines)


def logit_table(page: FeaturePage) -> pd.DataFrame:
    """Promoted and suppressed output tokens side by side."""
    n = max(len(page.promoted), len(page.suppressed))
    pad = [("", float("nan"))] * n
    up, down = [*page.promoted, *pad][:n], [*page.suppressed, *pad][:n]
    return pd.DataFrame({
        "promotes": [repr(t) for t, _ in up], "score ↑": [v for _, v in up],
        "suppresses": [repr(t) for t, _ in down], "score ↓": [v for _, v in down],
    })


def activation_histogram(page: FeaturePage) -> go.Figure:
    """Counts of its non-zero activations in log-spaced bins."""
    edges = np.asarray(page.hist_edges)
    centers = np.sqrt(edges[:-1] * edges[1:]) if edges[0] > 0 else edges[:-1]
    fig = go.Figure(go.Bar(x=centers, y=page.hist_counts, width=np.diff(edges),
                           marker_color="#ff7800",
                           hovertemplate="activation ≈ %{x:.3g}: %{y} tokens<extra></extra>"))
    fig.update_layout(title="Its non-zero activations", height=260, xaxis_type="log",
                      xaxis_title="activation (log scale)", yaxis_title="tokens",
                      margin=dict(t=40, b=40, l=50, r=10))
    return fig


def density_figure(n_fire_F, n_tokens: int, *, layer: int, mark: float | None = None,
                   bin_width: float = 0.25) -> go.Figure:
    """Histogram of log10 feature density for one layer; dead features in their own bar."""
    n_fire = np.asarray(n_fire_F, dtype=np.float64)
    dead = int((n_fire == 0).sum())
    logd = np.log10(n_fire[n_fire > 0] / max(n_tokens, 1))
    low = math.floor(math.log10(1 / max(n_tokens, 1)) / bin_width) * bin_width
    edges = np.arange(low, bin_width / 2 + 1e-9, bin_width)
    counts, edges = np.histogram(logd, bins=edges)
    fig = go.Figure()
    fig.add_bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=bin_width, name="alive",
                marker_color="#1f77b4",
                hovertemplate="10^%{x:.2f}: %{y} features<extra></extra>")
    fig.add_bar(x=[low - 2 * bin_width], y=[dead], width=bin_width, name=f"dead ({dead})",
                marker_color="#999", hovertemplate="never fired: %{y} features<extra></extra>")
    for x, text in ((math.log10(RARE), "rare"), (math.log10(DENSE), "dense")):
        fig.add_vline(x=x, line_dash="dot", line_color="#888", annotation_text=text)
    if mark is not None and mark > 0:
        fig.add_vline(x=math.log10(mark), line_color="#ff7800", annotation_text="this feature")
    fig.update_layout(
        title=f"Layer {layer}: how often its {len(n_fire):,} features fire "
              f"({n_tokens:,} tokens)",
        height=300, xaxis_title="log10 feature density (share of tokens it fires on)",
        yaxis_title="features", bargap=0.05, margin=dict(t=50, b=40, l=50, r=10),
        legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"))
    return fig
