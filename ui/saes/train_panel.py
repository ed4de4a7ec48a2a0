"""Train a new SAE set on demand (SAEs tab, not in public mode): the app's one build worker
trains it with the progress panel above the tabs, and the set joins the picker when done."""

from __future__ import annotations

import gradio as gr

from sae_core.activations import SITES
from sae_core.atlas.layout import ATLAS_ROOT, is_built
from sae_core.config import TRAIN_FORM_LIMITS, BuildConfig, TrainConfig
from sae_core.errors import check_whole
from sae_core.hub.pretrained_atlas import atlas_folder
from sae_core.hub.registry import slug
from sae_core.jobs.stages import BuildJob
from sae_core.lm import EMBEDDED

from ..serving import builds
from ..serving.errors import friendly, text_arg

MAX_LAYERS_TEXT = 200
SITE_CHOICES = [("Residual stream", "resid"), ("MLP output", "mlp"),
                ("Attention output", "attn")]
MAX_NAME_CHARS, MAX_MODEL_CHARS = 100, 200
"""Longest set name and model id or folder."""
FIELDS = {"expansion": "width (x d_model)", "k": "k", "max_tokens": "token budget"}
"""The TrainConfig fields the form asks for, by the words it shows; their bounds are the
library's `TRAIN_FORM_LIMITS` and their defaults `TrainConfig`'s."""


def parse_layers(text: str | None) -> tuple[int, ...] | None:
    """"all" or empty -> None (every layer); "0, 5,12" -> (0, 5, 12)."""
    text = (text or "").strip().lower()
    if text in ("", "all"):
        return None
    if len(text) > MAX_LAYERS_TEXT:
        raise ValueError("too many layers listed; write \"all\" for every layer")
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    try:
        return tuple(sorted({check_whole(p, "layer", 0, from_text=True) for p in parts}))
    except ValueError:
        raise ValueError(f"layers must be \"all\" or numbers like 0,5,12; got {text!r}") from None


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
    asked = dict(zip(FIELDS, (expansion, k, max_tokens), strict=True))
    cfg = TrainConfig(**{f: TRAIN_FORM_LIMITS[f].check(asked[f], FIELDS[f], from_text=True)
                         for f in FIELDS})
    return BuildJob(folder, data, cfg, parts=("SAEs",))


@friendly("starting the training")
def start_training(name, model, layers, expansion, k, max_tokens, sites=("resid",)):
    job = train_job(name, model, layers, expansion, k, max_tokens, sites)
    builds.start(job)
    return (f"Training `{job.folder.name}` in the background (progress above the tabs); "
            "it joins the SAE set picker when done."), gr.Timer(active=True)


def _number_box(field: str, label: str) -> gr.Number:
    """A number box for a TrainConfig field: its default, and the bounds a visitor may ask."""
    limit = TRAIN_FORM_LIMITS[field]
    return gr.Number(getattr(TrainConfig(), field), precision=0, minimum=limit.lo,
                     maximum=limit.hi, label=label)


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
        expansion = _number_box("expansion", "Width (x d_model)")
        k = _number_box("k", "k (active features per token)")
        budget = _number_box("max_tokens", "Token budget (LM tokens)")
        sites = gr.CheckboxGroup(SITE_CHOICES, value=["resid"], label="Where the SAEs read")
    train = gr.Button("Train", variant="primary")
    status = gr.Markdown()
    train.click(start_training, [name, model, layers, expansion, k, budget, sites],
                [status, timer], concurrency_limit=1)
