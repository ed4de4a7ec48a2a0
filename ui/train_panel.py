"""Train a new SAE set on demand (SAEs tab, not in public mode): the app's one build worker
trains it with the progress panel above the tabs, and the set joins the picker when done."""

from __future__ import annotations

import math

import gradio as gr

from sae_core.activations import SITES
from sae_core.atlas.layout import ATLAS_ROOT, is_built
from sae_core.config import BuildConfig, TrainConfig
from sae_core.hub.pretrained_atlas import atlas_folder
from sae_core.hub.registry import slug
from sae_core.jobs.stages import BuildJob
from sae_core.lm import EMBEDDED

from . import builds
from .errors import friendly, text_arg

MAX_LAYERS_TEXT = 200
SITE_CHOICES = [("Residual stream", "resid"), ("MLP output", "mlp"),
                ("Attention output", "attn")]
MAX_NAME_CHARS, MAX_MODEL_CHARS = 100, 200
"""Longest set name and model id or folder."""


def _whole(value, name: str, low: int, high: int) -> int:
    try:
        number = float(value) if value is not None else math.nan
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not math.isfinite(number) or number != int(number) or not low <= number <= high:
        raise ValueError(f"{name} must be a whole number from {low:,} to {high:,}, got {value}")
    return int(number)


def parse_layers(text: str | None) -> tuple[int, ...] | None:
    """"all" or empty -> None (every layer); "0, 5,12" -> (0, 5, 12)."""
    text = (text or "").strip().lower()
    if text in ("", "all"):
        return None
    if len(text) > MAX_LAYERS_TEXT:
        raise ValueError("too many layers listed; write \"all\" for every layer")
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    if not all(p.isdigit() for p in parts):
        raise ValueError(f"layers must be \"all\" or numbers like 0,5,12; got {text!r}")
    return tuple(sorted({int(p) for p in parts}))


def parse_sites(chosen) -> tuple[str, ...]:
    """The ticked sites, in the library's order; a plain reason for anything else."""
    chosen = list(chosen) if isinstance(chosen, (list, tuple)) else [chosen]
    if not chosen or any(not isinstance(c, str) or c not in SITES for c in chosen):
        raise ValueError(f"sites must be one or more of {', '.join(SITES)}; "
                         f"got {str(chosen)[:80]}")
    return tuple(s for s in SITES if s in chosen)


def train_job(name: str, model: str, layers: str, expansion, k, max_tokens,
              sites=("resid",)) -> BuildJob:
    """The build a visitor asked for, checked; ValueError with a plain reason otherwise."""
    name = text_arg(name, "The name", MAX_NAME_CHARS).strip()
    model = text_arg(model, "The model", MAX_MODEL_CHARS)
    layers = text_arg(layers, "The layers", MAX_LAYERS_TEXT)
    if not name or slug(name) == "sae":
        raise ValueError("give the new set a name (letters, digits, - or _)")
    folder = atlas_folder(ATLAS_ROOT, name)
    if is_built(folder):
        raise ValueError(f"a set called {name!r} exists already; pick another name")
    data = BuildConfig(model=(model or "").strip() or EMBEDDED, layers=parse_layers(layers),
                       site=parse_sites(sites))
    cfg = TrainConfig(expansion=_whole(expansion, "width (x d_model)", 1, 64),
                      k=_whole(k, "k", 1, 512),
                      max_tokens=_whole(max_tokens, "token budget", 4_096, 10_000_000))
    return BuildJob(folder, data, cfg, parts=("SAEs",))


@friendly("starting the training")
def start_training(name, model, layers, expansion, k, max_tokens, sites=("resid",)):
    job = train_job(name, model, layers, expansion, k, max_tokens, sites)
    builds.start(job)
    return (f"Training `{job.folder.name}` in the background (progress above the tabs); "
            "it joins the SAE set picker when done."), gr.Timer(active=True)


def build_train_panel(timer: gr.Timer) -> None:
    """The form; `timer` is the progress panel's (started again when a job starts)."""
    gr.Markdown("### Train a new SAE set\nOne SAE per chosen layer and site, trained in one "
                "pass over the bundled corpus by the app's build worker (one build at a time; the "
                "progress panel above the tabs can cancel it, and starting it again resumes).")
    with gr.Row():
        name = gr.Textbox(label="Name for the trained set", placeholder="e.g. smol-k64",
                          max_length=MAX_NAME_CHARS)
        model = gr.Textbox(EMBEDDED, label="Model (\"embedded\", a Hub id or a folder)",
                           max_length=MAX_MODEL_CHARS)
        layers = gr.Textbox("all", label="Layers (\"all\" or e.g. 0,5,12)",
                            max_length=MAX_LAYERS_TEXT)
    with gr.Row():
        expansion = gr.Number(8, precision=0, minimum=1, maximum=64, label="Width (x d_model)")
        k = gr.Number(32, precision=0, minimum=1, maximum=512,
                      label="k (active features per token)")
        budget = gr.Number(307_200, precision=0, minimum=4_096, maximum=10_000_000,
                           label="Token budget (LM tokens)")
        sites = gr.CheckboxGroup(SITE_CHOICES, value=["resid"], label="Where the SAEs read")
    train = gr.Button("Train", variant="primary")
    status = gr.Markdown()
    train.click(start_training, [name, model, layers, expansion, k, budget, sites],
                [status, timer], concurrency_limit=1)
