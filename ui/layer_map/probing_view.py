"""The probing figure: how well a few SAE latents read each token label, per layer, against
as many raw neurons and a probe on the whole residual (plain data in, Plotly out)."""

from __future__ import annotations

import plotly.graph_objects as go

from sae_core.explore.probing import ProbingResult

from ..shared.plots import COLORS, CONTROL_MODEL, band_traces, site_lines
from ..shared.sites import axis_title
from .view import TASK_NAMES

NEURON_K = 5


Spec = tuple[str, int | None, str]
"""(kind, k, metric) of a line: ProbingResult.per_layer's arguments."""


def line_specs(result: ProbingResult) -> dict[str, Spec]:
    """Line name -> what it draws: mean held-out F1 per layer of SAE latents at every k,
    neurons at k = 5 and the whole residual; for k = 5, SAE latents and neurons, balanced
    accuracy (SAEBench's measure) and AUROC too."""
    specs: dict[str, Spec] = {f"SAE, {k} latent{'s' * (k > 1)}": ("sae", k, "f1")
                              for k in result.ks}
    if NEURON_K in result.ks:
        specs[f"raw neurons, {NEURON_K}"] = ("neuron", NEURON_K, "f1")
    specs["whole residual (ceiling)"] = ("dense", None, "f1")
    if NEURON_K in result.ks and any(result.per_layer("sae", NEURON_K, None, "bacc")):
        for metric, title in (("bacc", "balanced accuracy"), ("auroc", "AUROC")):
            for kind, name in (("sae", f"SAE {NEURON_K} latents"),
                               ("neuron", f"neurons {NEURON_K}")):  # older results: F1 only
                specs[f"{title}, {name}"] = (kind, NEURON_K, metric)
    return specs


def probing_lines(result: ProbingResult, task: str | None) -> dict[str, list[float | None]]:
    """Line name -> its value per layer (None where the layer has no label)."""
    return {name: result.per_layer(kind, k, task, metric)
            for name, (kind, k, metric) in line_specs(result).items()}


def probing_bands(result: ProbingResult, task: str | None
                  ) -> dict[str, list[tuple[float, float] | tuple[None, None]]]:
    """Line name -> per layer its 95% interval over held-out documents, for the lines whose
    measure has one (F1, balanced accuracy; not AUROC) in a result that kept its draws."""
    out = {}
    for name, (kind, k, metric) in line_specs(result).items():
        if (band := result.bands(kind, k, task, metric)) is not None:
            out[name] = band
    return out


def probing_source(result: ProbingResult) -> str:
    """Which documents the probes learned and were scored on, for the figure's title."""
    docs = result.documents
    if docs.get("unseen_by_saes"):
        return f"on {docs['documents']:,} documents the SAEs never trained on"
    return "on documents the SAEs also trained on"


def probing_figure(result: ProbingResult, task: str | None,
                   control: ProbingResult | None = None) -> go.Figure:
    """Each line with its band over held-out documents where it has one (`probing_bands`);
    `control`: the random-init model's probes, its SAE lines dashed (without bands: the
    figure keeps one band per measure readable)."""
    bands = probing_bands(result, task)
    lines = {name: (result.hookpoints, ys) for name, ys in probing_lines(result, task).items()}
    if control is not None:
        lines |= {f"{name}, {CONTROL_MODEL}": (control.hookpoints, ys)
                  for name, ys in probing_lines(control, task).items()
                  if name.startswith("SAE")}
    fig = go.Figure()
    for i, (name, (hooks, ys)) in enumerate(lines.items()):
        color = COLORS[i % len(COLORS)]
        if name in bands:
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
