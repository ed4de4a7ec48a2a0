"""The SAE lab's figures: the L0 vs FVU frontier (and L0 vs CE loss recovered on a model
layer, L0 vs MMCS on synthetic data), one point per trained SAE. They save as HTML with
plotly.js inside (opens offline) and as PNG when a chromium is installed to draw them
(Debian's, as the README's screenshots use)."""

from __future__ import annotations

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


def frontier_figure(rows: list[dict], title: str, *, connect: bool) -> go.Figure:
    """L0 (log) against FVU, and against the second metric; `connect` joins a sweep's points
    in sweep order (a frontier), a comparison's stay apart (one recipe each)."""
    right = second_metric(rows)
    panels = [("fvu", "FVU (lower is better)")] + ([right] if right else [])
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[f"L0 vs {t.split(' (')[0]}"
                                                                   for _, t in panels])
    for col, (key, axis) in enumerate(panels, 1):
        fig.add_scatter(
            x=[r["l0"] for r in rows], y=[r[key] for r in rows], text=[r["label"] for r in rows],
            mode="lines+markers+text" if connect else "markers+text", textposition="top center",
            showlegend=False, row=1, col=col,
            hovertemplate="%{text}<br>L0 %{x:.1f}<br>" + axis + " %{y:.4f}<extra></extra>")
        fig.update_yaxes(title_text=axis, row=1, col=col)
        fig.update_xaxes(title_text="L0 (active latents per token, log)", type="log", row=1,
                         col=col)
    fig.update_layout(title=title, width=WIDTH, height=HEIGHT, margin=dict(t=70, b=50, l=60,
                                                                           r=20))
    return fig


def save_figure(fig: go.Figure, stem: Path, *, png: bool = True) -> list[Path]:
    """`stem`.html always; `stem`.png too when asked and chromium is here. Returns what was
    written."""
    html = stem.with_suffix(".html")
    write_text(html, fig.to_html(include_plotlyjs=True, full_html=True))
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None or not png:
        return [html]
    from playwright.sync_api import sync_playwright  # only here: the app never draws PNGs

    image = stem.with_suffix(".png")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": WIDTH + 20, "height": HEIGHT + 20})
        page.goto(html.resolve().as_uri(), wait_until="load")
        page.wait_for_timeout(1000)  # plotly draws after load
        write_atomic(image, lambda tmp: page.screenshot(path=str(tmp), type="png"))
        browser.close()
    return [html, image]


def draw_run(folder: Path, *, png: bool = True) -> list[Path]:
    """The frontier figure of a lab run's folder (its results.json), saved beside it."""
    results = read_json(Path(folder) / "results.json")
    fig = frontier_figure(results["rows"], results["title"], connect=results["kind"] == "sweep")
    return save_figure(fig, Path(folder) / "frontier", png=png)
