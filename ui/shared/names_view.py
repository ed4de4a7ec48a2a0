"""Feature names in the app: read once per atlas, shown next to feature ids in every tab.

An atlas whose names were not computed yet (or are stale or damaged) has none: every view
then shows the ids alone, as before.
"""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go

from sae_core.explore.names import (
    DETECTED_F1,
    LOW_SCORE,
    FeatureName,
    FeatureNames,
    detected_share,
    label_of,
)
from sae_core.steer.pushed import PushedToken

from .plots import COLORS, CONTROL_MODEL, band_traces, site_lines
from .sites import axis_title, hookpoint_at


def name_cells(names: FeatureNames | None, hookpoint: str, ids: list[int]) -> list[str]:
    """Per feature id: its name with F1 ("?" marks a weak fit), "" without names."""
    return [label_of(names, hookpoint, int(f)) if int(f) >= 0 else "" for f in ids]


def feature_name(names: FeatureNames | None, hookpoint: str, feature: int
                 ) -> FeatureName | None:
    if names is None or hookpoint not in names.layers:
        return None
    try:
        return names.name(hookpoint, int(feature))
    except (IndexError, ValueError, TypeError):
        return None


def name_at_layer(names: FeatureNames | None, layer, feature) -> FeatureName | None:
    """The name of a feature given by layer key (ui/shared/sites.py: a bare number is the residual
    hookpoint first)."""
    if names is None:
        return None
    try:
        h = hookpoint_at(names.hookpoints, layer)
    except ValueError:
        return None
    return feature_name(names, h, feature)


def name_json(names: FeatureNames | None, hookpoint: str, feature: int) -> dict | None:
    """A feature's name and held-out scores for the API; None without names."""
    name = feature_name(names, hookpoint, feature)
    if name is None:
        return None
    return {"text": name.text, "precision": name.precision, "recall": name.recall,
            "f1": name.f1, "rule": name.rule, "weak_fit": name.weak}


def name_markdown(name: FeatureName | None) -> str:
    """The name line of a feature page: the name, its held-out precision / recall / F1 and
    a "?" weak-fit mark whose tooltip says what the score means; "" without a name."""
    if name is None:
        return ""
    shown = f"<code>{html.escape(name.text)}</code>"
    if not name.rule:
        why = html.escape(name.explain(), quote=True)
        return f'**Name:** <span title="{why}">{shown}</span>'
    mark = ""
    if name.weak:
        tip = html.escape(f"A weak fit: F1 below {LOW_SCORE:g}. " + name.explain(), quote=True)
        mark = f' <abbr title="{tip}">? weak fit</abbr>'
    tip = html.escape(name.explain(), quote=True)
    return (f"**Name:** {shown}{mark} · <span title=\"{tip}\">as a detector on held-out "
            f"tokens: precision {name.precision:.2f}, recall {name.recall:.2f}, F1 "
            f"{name.f1:.2f}</span>")


def pushed_frame(tokens: list[PushedToken]) -> pd.DataFrame:
    """What a pushed feature makes more likely: token, rise and both probabilities (%)."""
    return pd.DataFrame({
        "token": [repr(t.token) for t in tokens],
        "rise (pts %)": [round(100 * t.rise, 3) for t in tokens],
        "clean %": [round(100 * t.clean, 3) for t in tokens],
        "pushed %": [round(100 * t.pushed, 3) for t in tokens],
    })


def detected_figure(names: FeatureNames, control: FeatureNames | None = None) -> go.Figure:
    """Per layer: the share of its alive features whose name detects them (held-out F1 >=
    0.5), with its band over held-out documents where the names kept their draws; with
    `control` (the random-init model's names), its line dashed."""
    fig = go.Figure()
    for lin, suffix, dash in ((names, "", None), (control, f", {CONTROL_MODEL}", "dash")):
        if lin is None:
            continue
        shares = [detected_share(lin, [h])[0] for h in lin.hookpoints]
        name = "features a name detects" + suffix
        if lin is names and all(s.lo == s.lo for s in shares):  # NaN: no draws
            band_traces(fig, lin.hookpoints, [(s.lo, s.hi) for s in shares], COLORS[2], name,
                        scale=100)
        site_lines(fig, lin.hookpoints, [100 * s.point for s in shares], name,
                   mode="lines+markers", line=dict(dash=dash, color=COLORS[2]),
                   legendgroup=name)
    fig.update_layout(
        title=f"How many features a plain name explains (held-out F1 ≥ {DETECTED_F1:g}; "
              "bands: 95% range over documents)", height=330,
        xaxis_title=axis_title(names.hookpoints), yaxis_title="% of alive features",
        yaxis=dict(rangemode="tozero"), margin=dict(t=50, b=40, l=50, r=20),
        legend=dict(orientation="h", y=-0.25))
    return fig
