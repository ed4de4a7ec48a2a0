"""The SAEs tab's Hub section: model -> release -> SAE ids, with search and a per-layer pick,
and the releases the app cannot load with the reason. Plain functions over the release table
(sae_core/hub/registry.py, releases.py), then the layout; the loads themselves are
ui/saes/tab.py's `hub_load` and `hub_load_release`, passed in."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import gradio as gr
import pandas as pd

from sae_core.hub.registry import RELEASES, Release, release_label
from sae_core.hub.releases import ReleaseVerdict, verdict
from sae_core.lm import EMBEDDED_ID

from ..serving import public

ALL_MODELS, ALL_LAYERS = "all models", "all layers"
MAX_SAE_CHOICES = 400
"""SAE ids the picker lists at once (Gemma Scope releases hold up to ~500): search narrows."""
MAX_ALL = 36
"""A release with at most this many loadable SAEs is offered whole ("all") on picking it."""


@lru_cache(maxsize=1)
def verdicts() -> dict[str, ReleaseVerdict]:
    """Every release's verdict, once per process (the converters do not change)."""
    return {name: verdict(r) for name, r in RELEASES.items()}


def _offered() -> list[Release]:
    return [RELEASES[n] for n in public.offered(public.policy())]


def model_choices() -> list[str]:
    return [ALL_MODELS, *sorted({r.model for r in _offered()}, key=str.lower)]


def _matches(release: Release, model: str | None, search: str) -> bool:
    text = (search or "").strip().lower()
    if model not in (None, "", ALL_MODELS) and release.model != model:
        return False
    return not text or text in f"{release.name} {release.repo_id} {release.model}".lower() \
        or any(text in s.id.lower() for s in release.saes)


def release_choices(model: str | None, search: str = "") -> list[tuple[str, str]]:
    """(label, name) of the loadable releases on `model` that match `search`."""
    v = verdicts()
    return [(release_label(r), r.name) for r in _offered()
            if v[r.name].ok and _matches(r, model, search)]


def refused_table(model: str | None, search: str = "") -> pd.DataFrame:
    """The releases the app cannot load (on `model`, matching `search`), with the reason;
    in public mode also those it does not offer."""
    v, offered = verdicts(), set(public.offered(public.policy()))
    rows = [{"release": r.name, "model": r.model, "SAEs": len(r.saes), "layout": r.format,
             "why not": v[r.name].reason or "not offered on this public demo"}
            for r in RELEASES.values()
            if (not v[r.name].ok or r.name not in offered) and _matches(r, model, search)]
    return pd.DataFrame(rows, columns=["release", "model", "SAEs", "layout", "why not"])


def layer_choices(name: str | None) -> list[str | int]:
    release, v = RELEASES.get(name or ""), verdicts().get(name or "")
    if release is None or v is None:
        return [ALL_LAYERS]
    ok = set(v.supported)
    layers = {s.layer for s in release.saes if s.id in ok and s.layer is not None}
    return [ALL_LAYERS, *sorted(layers)]


def sae_choices(name: str | None, layer, search: str = "") -> list[str]:
    """The loadable SAE ids of the release at `layer` whose id holds `search`."""
    release, v = RELEASES.get(name or ""), verdicts().get(name or "")
    if release is None or v is None:
        return []
    ok, text = set(v.supported), (search or "").strip().lower()
    return [s.id for s in release.saes if s.id in ok and (layer in (None, ALL_LAYERS)
            or s.layer == layer) and text in s.id.lower()][:MAX_SAE_CHOICES]


def release_fields(name: str | None) -> tuple[str, str, str, str]:
    """(source, SAE ids, model, note) that picking a release fills in."""
    release = RELEASES.get(name or "")
    if release is None:
        return "", "", EMBEDDED_ID, ""
    v = verdicts()[release.name]
    refused = (f" Not loadable here: {len(v.refused)} of its SAEs ("
               f"{'; '.join(sorted(set(v.refused.values())))})." if v.refused else "")
    note = (f"{release.note}\n\n" if release.note else "") + (
        f"Trained on `{release.model}`; repo `{release.repo_id}`; layout `{release.format}`; "
        f"{len(v.supported)} loadable SAEs.{refused}")
    ids = "all" if 0 < len(v.supported) <= MAX_ALL else ""
    return release.name, ids, release.run_on or release.model, note


def _pick_events(model, search, release, layer, picked, sae_ids, refused) -> None:
    def narrow(m, text):
        return gr.Dropdown(choices=release_choices(m, text)), refused_table(m, text)

    gr.on([model.change, search.submit], narrow, [model, search], [release, refused],
          queue=False)
    release.change(lambda r, t: (gr.Dropdown(choices=layer_choices(r), value=ALL_LAYERS),
                                 gr.Dropdown(choices=sae_choices(r, ALL_LAYERS, t), value=[])),
                   [release, search], [layer, picked], queue=False)
    gr.on([layer.change, search.submit], lambda r, la, t: gr.Dropdown(
        choices=sae_choices(r, la, t)), [release, layer, search], picked, queue=False)
    picked.input(lambda ids: ", ".join(ids or []), picked, sae_ids, queue=False)


def build_hub_panel(picker: gr.Dropdown, sets: gr.Dataframe, *, is_public: bool,
                    load: Callable, load_release: Callable, limit: dict,
                    max_chars: dict[str, int]) -> None:
    """The Hub section: pick a model, search, pick a release, a layer and SAE ids, load."""
    with gr.Row():
        model_pick = gr.Dropdown(model_choices(), value=ALL_MODELS, label="Trained on")
        search = gr.Textbox(label="Search releases and SAE ids (Enter)",
                            placeholder="e.g. gemma-scope, res, layer_12, width_16k")
    with gr.Row():
        release = gr.Dropdown(release_choices(ALL_MODELS), value=None, label="Release")
        if not is_public:
            source = gr.Textbox(label="Release or Hub repo id",
                                placeholder="e.g. EleutherAI/sae-SmolLM2-135M-64x",
                                max_length=max_chars["source"])
    with gr.Row():
        layer = gr.Dropdown([ALL_LAYERS], value=ALL_LAYERS, label="Layer")
        picked = gr.Dropdown([], value=[], multiselect=True, label="SAEs of the release")
    with gr.Row():
        sae_ids = gr.Textbox(label="SAE ids or folders (comma-separated; \"all\" for a "
                                   "release)", placeholder="e.g. layers.5.mlp, layers.9.mlp",
                             max_length=max_chars["ids"])
        if is_public:
            model = gr.Dropdown(list(public.policy().allowed_models), value=EMBEDDED_ID,
                                label="Model to run them on")
        else:
            model = gr.Textbox(EMBEDDED_ID, label="Model to run them on",
                               max_length=max_chars["model"])
            name = gr.Textbox(label="Name of the new set (optional)",
                              max_length=max_chars["name"])
    note = gr.Markdown()
    go = gr.Button("Load from the Hub", variant="primary")
    status = gr.Markdown()
    with gr.Accordion("Releases this app cannot load, and why", open=False):
        refused = gr.Dataframe(refused_table(ALL_MODELS), interactive=False)
    _pick_events(model_pick, search, release, layer, picked, sae_ids, refused)
    if is_public:
        release.change(lambda r: release_fields(r)[1:], release, [sae_ids, model, note],
                       queue=False)
        go.click(load_release, [release, sae_ids, model, picker], [picker, status, sets],
                 **limit)
    else:
        release.change(release_fields, release, [source, sae_ids, model, note], queue=False)
        go.click(load, [source, sae_ids, model, name, picker], [picker, status, sets], **limit)
