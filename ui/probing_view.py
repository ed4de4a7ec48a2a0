"""The probing figure: how well a few SAE latents read each token label, per layer, against
as many raw neurons and a probe on the whole residual (plain data in, Plotly out)."""

from __future__ import annotations

import plotly.graph_objects as go

from sae_core.explore.probing import ProbingResult

from .layer_map_view import COLORS, CONTROL_MODEL, TASK_NAMES, band_traces
from .plots import site_lines
from .sites import axis_title

NEURON_K = 5


def probing_lines(result: ProbingResult, task: str | None) -> dict[str, list[float | None]]:
    """Line name -> mean held-out F1 per layer (None where the layer has no label); for
    k = 5, SAE latents and neurons, balanced accuracy (SAEBench's measure) and AUROC too."""
    lines = {f"SAE, {k} latent{'s' * (k > 1)}": result.per_layer("sae", k, task)
             for k in result.ks}
    if NEURON_K in result.ks:
        lines[f"raw neurons, {NEURON_K}"] = result.per_layer("neuron", NEURON_K, task)
    lines["whole residual (ceiling)"] = result.per_layer("dense", None, task)
    if NEURON_K in result.ks and any(result.per_layer("sae", NEURON_K, task, "bacc")):
        for metric, title in (("bacc", "balanced accuracy"), ("auroc", "AUROC")):
            for kind, name in (("sae", f"SAE {NEURON_K} latents"),
                               ("neuron", f"neurons {NEURON_K}")):  # older results: F1 only
                lines[f"{title}, {name}"] = result.per_layer(kind, NEURON_K, task, metric)
    return lines


def probing_source(result: ProbingResult) -> str:
    """Which documents the probes learned and were scored on, for the figure's title."""
    docs = result.documents
    if docs.get("unseen_by_saes"):
        return f"on {docs['documents']:,} documents the SAEs never trained on"
    return "on documents the SAEs also trained on"


def probing_figure(result: ProbingResult, task: str | None,
                   bands: dict[str, list[tuple[float, float]]] | None = None,
                   control: ProbingResult | None = None) -> go.Figure:
    """`bands`: line name -> per layer (lo, hi), shaded under that line (an interval over
    documents, firings.LayerFirings.doc_N); `control`: the random-init model's probes, its
    SAE lines dashed."""
    lines = {name: (result.hookpoints, ys) for name, ys in probing_lines(result, task).items()}
    if control is not None:
        lines |= {f"{name}, {CONTROL_MODEL}": (control.hookpoints, ys)
                  for name, ys in probing_lines(control, task).items()
                  if name.startswith("SAE")}
    fig = go.Figure()
    for i, (name, (hooks, ys)) in enumerate(lines.items()):
        color = COLORS[i % len(COLORS)]
        if bands and bands.get(name):
            band_traces(fig, hooks, bands[name], color, name)
        dash = "dot" if name.startswith(("raw", "whole")) else (
            "dash" if name.endswith(CONTROL_MODEL) else None)
        site_lines(fig, hooks, ys, name, mode="lines+markers",
                   line=dict(dash=dash, color=color), legendgroup=name)
    what = f"the {TASK_NAMES[task]}" if task else "token labels (all tasks)"
    fig.update_layout(
        title=f"How well a probe on k SAE latents reads {what}, against raw neurons "
              f"({probing_source(result)})",
        height=360, xaxis_title=axis_title(result.hookpoints),
        yaxis_title="held-out F1 (unless named), mean over labels", yaxis=dict(range=[0, 1]),
        margin=dict(t=50, b=40, l=50, r=20))
    return fig
