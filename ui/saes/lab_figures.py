"""The SAE lab's figures: the L0 vs FVU frontier (and L0 vs CE loss recovered on a model
layer, L0 vs MMCS on synthetic data), one point per trained SAE. They save as HTML with
plotly.js inside (opens offline) and as PNG when a chromium is installed to draw them
(Debian's, as the README's screenshots use)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sae_core.atomic import read_json, write_atomic, write_text

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WIDTH, HEIGHT = 1100, 460


def second_metric(rows: list[dict]) -> tuple[str, str] | None:
    """What the right panel plots against L0: CE loss recovered (model) or MMCS (synthetic)."""
    for key, title in (("ce_recovered", "CE loss recovered"), ("mmcs", "MMCS (true features)")):
        if all(row.get(key) is not None for row in rows):
            return key, title
    return None


SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "cross", "star", "hexagon")
COLORS = ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692",
          "#b6e880")
"""Plotly's default colours, fixed per row so both panels match the legend."""


def frontier_figure(rows: list[dict], title: str, *, kind: str) -> go.Figure:
    """L0 (log) against FVU, and against the second metric. `kind`: "sweep" joins the points
    in sweep order (a frontier) and labels them by value; "recipes" gives each row its own
    marker and legend entry; "layers" labels each point by its layer, coloured by depth."""
    right = second_metric(rows)
    panels = [("fvu", "FVU (lower is better)")] + ([right] if right else [])
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[f"L0 vs {t.split(' (')[0]}"
                                                                   for _, t in panels])
    groups = [[r] for r in rows] if kind == "recipes" else [rows]
    for col, (key, axis) in enumerate(panels, 1):
        for i, group in enumerate(groups):
            marker = dict(size=10, symbol=SYMBOLS[i % len(SYMBOLS)],
                          color=COLORS[i % len(COLORS)])
            if kind == "layers":
                marker |= dict(color=list(range(len(group))), colorscale="Viridis")
            fig.add_scatter(
                x=[r["l0"] for r in group], y=[r[key] for r in group],
                text=[r["label"] for r in group], name=group[0]["label"], legendgroup=str(i),
                mode={"sweep": "lines+markers+text", "layers": "markers+text"}.get(
                    kind, "markers"),
                textposition="top center", showlegend=kind == "recipes" and col == 1,
                marker=marker, row=1, col=col,
                hovertemplate="%{text}<br>L0 %{x:.1f}<br>" + axis + " %{y:.4f}<extra></extra>")
        fig.update_yaxes(title_text=axis, row=1, col=col)
        fig.update_xaxes(title_text="L0 (active latents per token, log)", type="log", row=1,
                         col=col, range=_log_range([r["l0"] for r in rows]))
    fig.update_layout(title=title, width=WIDTH, height=HEIGHT,
                      margin=dict(t=70, b=50, l=60, r=20))
    return fig


def _log_range(values: list[float]) -> list[float]:
    """A log axis's range with room around the points (labels stay inside the plot)."""
    low, high = math.log10(max(min(values), 1e-3)), math.log10(max(max(values), 1e-3))
    pad = max(0.15, 0.1 * (high - low))
    return [low - pad, high + pad]


def save_figure(fig: go.Figure, stem: Path, *, png: bool = True) -> list[Path]:
    """`stem`.html always; `stem`.png too when asked and chromium is here, in a window the
    figure's size. Returns what was written."""
    html = stem.with_suffix(".html")
    write_text(html, fig.to_html(include_plotlyjs=True, full_html=True))
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None or not png:
        return [html]
    from playwright.sync_api import sync_playwright  # only here: the app never draws PNGs

    image = stem.with_suffix(".png")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        size = {"width": (fig.layout.width or WIDTH) + 20,
                "height": (fig.layout.height or HEIGHT) + 20}
        page = browser.new_page(viewport=size)
        page.goto(html.resolve().as_uri(), wait_until="load")
        page.wait_for_timeout(1500)  # plotly draws after load
        write_atomic(image, lambda tmp: page.screenshot(path=str(tmp), type="png",
                                                        full_page=True))
        browser.close()
    return [html, image]


def draw_run(folder: Path, *, png: bool = True) -> list[Path]:
    """The frontier figure of a lab run's folder (its results.json), saved beside it."""
    results = read_json(Path(folder) / "results.json")
    fig = frontier_figure(results["rows"], results["title"], kind=figure_kind(results))
    return save_figure(fig, Path(folder) / "frontier", png=png)


def figure_kind(results: dict) -> str:
    """How a run's rows are drawn: a sweep's as a frontier, a comparison's one per recipe."""
    return "sweep" if results["kind"] == "sweep" else "recipes"
