"""The SAEs tab: trained and Hub SAE sets, their quality, loading from the Hub, export (in
public mode: registry releases on allowed models only; no export, no push)."""

from __future__ import annotations

import math
from pathlib import Path

import gradio as gr
import pandas as pd
from huggingface_hub import get_token

from sae_core.atlas.info import AtlasInfo
from sae_core.atlas.layout import ATLAS_ROOT, is_built, list_atlases, read_info, read_metrics
from sae_core.hub.export import EXPORT_ROOT, export_saelens, push_to_hub
from sae_core.hub.fetch import HubError, check_repo
from sae_core.hub.load import parse_ids
from sae_core.hub.pretrained_atlas import atlas_folder, default_name, load_pretrained_atlas
from sae_core.hub.registry import RELEASES
from sae_core.hub.releases import loadable_ids
from sae_core.lm import EMBEDDED_ID
from sae_core.metrics import format_with_error

from ..serving import builds, public, session
from ..serving.errors import friendly, text_arg
from ..serving.serve import event_limits
from ..shared.plots import quality_by_layer
from ..shared.present import numbers_accordion
from .hub_panel import build_hub_panel, release_fields  # noqa: F401 - release_fields: its API
from .lab_panel import build_lab_panel
from .train_panel import build_train_panel

HUB_INTRO = """### Load SAEs from the Hugging Face Hub
Pick a known release (SAELens's whole table: choose the model, search, pick a layer and the
SAEs), or type a repo id with the SAE folders in it (SAELens: `cfg.json` +
`sae_weights.safetensors`; EleutherAI sparsify: `<hookpoint>/cfg.json` + `sae.safetensors`).
The set is checked against the model, measured on our corpus like a trained set, and then
feeds every tab."""
MAX_SOURCE_CHARS, MAX_IDS_CHARS, MAX_MODEL_CHARS, MAX_NAME_CHARS = 200, 4000, 200, 100
"""Longest Hub source (release or repo id), SAE-id list, model id and set or folder name."""
MAX_REPO_CHARS = 96
"""Longest Hub repo id (huggingface_hub's own limit)."""
HUB_INTRO_PUBLIC = f"""### Load SAEs from the Hugging Face Hub
Pick a known release and the SAEs you want ("all" for the whole release; up to
{public.MAX_PUBLIC_SAES} at once). The set is checked against the model, measured on our
corpus like a trained set, and then feeds every tab. This public demo loads only these
releases."""


def _origin(info: AtlasInfo) -> str:
    src = info.source
    if not src:
        cfg = info.train_cfg
        return (f"trained here ({cfg['architecture']}, {cfg['expansion']}x width, "
                f"k={cfg['k']}) on {info.lm_tokens:,} tokens of `{info.corpus}` in "
                f"{info.train_seconds:.0f} s")
    trained_for = ", ".join(src["trained_for"]) or "an unnamed model"
    return (f"loaded from `{src['release'] or src['repo_id']}` ({', '.join(src['formats'])}, "
            f"revision `{src['revision'][:12]}`), trained for {trained_for}")


@friendly("reading the SAE set's quality")
def atlas_summary(folder: str) -> tuple[str, pd.DataFrame, object]:
    """Markdown summary, per-layer metrics table and quality plot of one atlas."""
    if not folder or not is_built(Path(folder)):
        return "No atlas selected.", pd.DataFrame(), None
    info, metrics = read_info(folder), read_metrics(folder)
    first = next(iter(metrics.values()))
    md = (f"**{info.model}**, {len(metrics)} SAEs {_origin(info)}. Metrics on "
          f"{first['heldout_tokens']:,} held-out tokens of `{info.corpus}`")
    md += (f"; CE loss and KL on {first['ce_windows']} held-out windows spread over the "
           "corpus (± one standard error across windows). CE loss recovered is measured "
           "against zeroing the activation and, where shown, against replacing it by its "
           "mean (a harder bar)" if "ce_windows" in first else "")
    if "left_out_first" in first:
        md += (f". The evaluation leaves out position 0 of every window "
               f"({first['left_out_first']:,} tokens) and tokens whose norm exceeds "
               f"{first['outlier_factor']:g}x the layer's median ('left out (massive)'): "
               "they count in no metric and the splice leaves them as they are")
    md += "." + "".join(f"\n- {w}" for w in info.warnings)
    table = pd.DataFrame([
        {"hookpoint": h, "FVU": round(m["fvu"], 4), "L0": round(m["l0"], 1),
         "dead % (held-out)": round(100 * m["dead_frac_heldout"], 2),
         "dead % (train)": round(100 * m.get("dead_frac_train", float("nan")), 2),
         "CE loss recovered": format_with_error(m["ce_recovered"], m.get("ce_recovered_se")),
         "CE loss recovered (mean ablation)": format_with_error(
             m.get("ce_recovered_mean"), m.get("ce_recovered_mean_se")),
         "KL to the model (nats/token)": format_with_error(m.get("kl"), m.get("kl_se")),
         "left out (massive)": m.get("left_out_outliers", "n/a"),
         "dropped tokens": m.get("dropped_tokens", 0)}
        for h, m in metrics.items()
    ])
    return md, table, quality_by_layer(metrics)


def sets_table(root: Path = ATLAS_ROOT, extra: str | None = None) -> pd.DataFrame:
    """One row per SAE set on disk: origin, model and mean quality."""
    rows = []
    for folder in sorted({*list_atlases(root), *([extra] if extra else [])}):
        if not is_built(Path(folder)):
            continue
        info, metrics = read_info(folder), read_metrics(folder)

        def mean(key: str, metrics: dict = metrics) -> float:
            return round(sum(m[key] for m in metrics.values()) / len(metrics), 4)

        def mean_shown(key: str, metrics: dict = metrics) -> str:
            """The mean over layers at the precision the layers' mean error allows (an upper
            bound on the mean's error, whatever the layers' correlation)."""
            values = [m.get(key, math.nan) for m in metrics.values()]
            errors = [m.get(f"{key}_se", math.nan) for m in metrics.values()]
            return format_with_error(sum(values) / len(values), sum(errors) / len(errors))

        src = info.source
        rows.append({"SAE set": folder, "from": (src["release"] or src["repo_id"]) if src
                     else "trained here", "model": info.model, "SAEs": len(metrics),
                     "mean FVU": mean("fvu"), "mean L0": round(mean("l0"), 1),
                     "mean CE loss recovered": mean_shown("ce_recovered"),
                     "mean KL": mean_shown("kl")})
    return pd.DataFrame(rows)


def atlas_choices(atlas: Path) -> list[str]:
    return sorted({*list_atlases(), *([str(atlas)] if is_built(atlas) else [])})


@friendly("loading the SAEs from the Hub")
def hub_load(source: str, sae_ids: str, model: str, name: str, current: str | None,
             progress=gr.Progress()):  # noqa: B008 - Gradio's idiom
    """Load a Hub set as a new atlas; select it in the picker. Errors become gr.Error.

    The policy's checks run here, since a stranger can call the endpoint directly: in public
    mode only registry releases and allowed models, no custom name, and no Hub token."""
    source = text_arg(source, "The release or repo id", MAX_SOURCE_CHARS)
    sae_ids = text_arg(sae_ids, "The SAE ids", MAX_IDS_CHARS)
    model = text_arg(model, "The model", MAX_MODEL_CHARS)
    name = text_arg(name, "The name", MAX_NAME_CHARS)
    if not source.strip():
        raise gr.Error("Pick a release or type a Hub repo id.")
    policy = public.policy()
    try:
        source = public.check_source(policy, source)
        model = public.check_model(policy, model or EMBEDDED_ID)
        sae_ids = public.check_sae_ids(policy, source, sae_ids or "")
        if (release := RELEASES.get(source.strip())) is not None:  # why an SAE cannot load
            every = sae_ids.strip() == "all"
            ids = loadable_ids(release, parse_ids(sae_ids, release), every=every)
            sae_ids = ", ".join(ids) if every else sae_ids
    except ValueError as err:
        raise gr.Error(str(err)) from err
    if release is None:
        check_repo(source)  # before the model loads or any request leaves
    name = "" if policy.public else (name or "").strip()  # public: identical loads reuse one set
    same = atlas_folder(ATLAS_ROOT, default_name(source, sae_ids, model))
    if not name and is_built(same):  # the same SAEs on the same model: reuse them
        out, done = same, "was already loaded"
    else:
        try:
            progress(0.0, desc=f"loading the model {model}")
            out, warns = load_pretrained_atlas(
                source, sae_ids, model=model, lm=session.model(model), name=name or None,
                token=public.hub_token(policy), public=policy.public,  # pickles: allow list
                report=lambda msg, frac: progress(frac, desc=msg))
        except (HubError, ValueError, FileNotFoundError, RuntimeError) as err:
            raise gr.Error(str(err)) from err
        for warning in warns:
            gr.Warning(warning)
        done = "loaded"
    choices = sorted({*list_atlases(), *([current] if current else []), str(out)})
    return (gr.Dropdown(choices=choices, value=str(out)),
            f"**{out.name}** ({len(read_metrics(out))} SAEs) {done}; it is now the active set.",
            sets_table(extra=str(out)))


def hub_load_release(release: str, sae_ids: str, model: str, current: str | None,
                     progress=gr.Progress()):  # noqa: B008 - Gradio's idiom
    """Public mode's load: a registry release on an allowed model, under its default name."""
    return hub_load(release, sae_ids, model, "", current, progress=progress)


def export_folder(folder: str, name: str | None) -> Path:
    """checkpoints/export/<name> (default: the set's folder name); a name cannot lead out."""
    name = text_arg(name, "The export folder name", MAX_NAME_CHARS).strip()
    return atlas_folder(EXPORT_ROOT, name or Path(folder).name)


@friendly("exporting the SAE set")
def export_set(folder: str | None, name: str, repo_id: str) -> str:
    """Write the active set in the SAELens layout under checkpoints/export/<name>."""
    if not isinstance(folder, str) or not folder or not is_built(Path(folder)):
        raise gr.Error("Pick an SAE set first.")
    out = export_folder(folder, name)
    repo_id = text_arg(repo_id, "The repo id", MAX_REPO_CHARS).strip()
    if repo_id:
        check_repo(repo_id)
    try:
        out = export_saelens(Path(folder), out, repo_id=repo_id or "<repo_id>")
    except (HubError, ValueError, FileNotFoundError) as err:
        raise gr.Error(str(err)) from err
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    return f"Exported to `{out}` ({len(files)} files, with a README.md model card)."


@friendly("pushing to the Hub")
def push_set(folder: str | None, name: str, repo_id: str) -> str:
    if public.policy().public:  # never registered then; refused anyway
        raise gr.Error("This public demo does not push to the Hub.")
    repo_id = text_arg(repo_id, "The repo id", MAX_REPO_CHARS).strip()
    if not repo_id:
        raise gr.Error("Type the Hub repo id to push to (e.g. `you/my-saes`).")
    repo_id = check_repo(repo_id)
    if not isinstance(folder, str) or not folder:
        raise gr.Error("Pick an SAE set first.")
    out = export_folder(folder, name)
    try:
        url = push_to_hub(out, repo_id)
    except HubError as err:
        raise gr.Error(f"{err} (export the set first)" if "not an exported" in str(err)
                       else str(err)) from err
    return f"Pushed `{out}` to [{repo_id}]({url})."


def build_saes_tab(picker: gr.Dropdown, *, train_timer: gr.Timer | None = None,
                   refreshed: gr.Textbox | None = None) -> None:
    """`picker` (above the tabs) holds the active SAE set's folder. In public mode
    (`public.policy()` when the tab is built) Hub loads go through the release dropdown only,
    and training, export and push are not registered at all: no button, no endpoint.
    `train_timer`: the build panel's timer (ui/serving/builds.py), started when training starts."""
    is_public = public.policy().public
    with gr.Tab("SAEs", id="saes"):
        gr.Markdown("SAE sets and their quality on text they never saw. "
                    "*FVU*: share of the layer's variation the SAE misses. *L0*: features "
                    "active per token. *CE loss recovered*: how much of the model's ability "
                    "to predict the next word survives when the SAE replaces the layer. "
                    "*KL*: how far the model's next-word probabilities move then (0: not at "
                    "all). ± is one standard error across held-out windows.")
        md, df, fig = atlas_summary(picker.value)
        summary = gr.Markdown(md)
        plot = gr.Plot(fig)
        with numbers_accordion("The numbers, layer by layer"):
            table = gr.Dataframe(df, interactive=False)
        gr.Markdown("### All SAE sets\nSelect a row to make that set the active one.")
        sets = gr.Dataframe(sets_table(extra=picker.value), interactive=False)

        gr.Markdown(HUB_INTRO_PUBLIC if is_public else HUB_INTRO)
        build_hub_panel(picker, sets, is_public=is_public, load=hub_load,
                        load_release=hub_load_release,
                        limit=dict(concurrency_limit=event_limits(is_public).hub_load,
                                   concurrency_id="hub_load"),
                        max_chars=dict(source=MAX_SOURCE_CHARS, ids=MAX_IDS_CHARS,
                                       model=MAX_MODEL_CHARS, name=MAX_NAME_CHARS))
        events = builds.atlas_events(picker, refreshed)
        gr.on(events, atlas_summary, picker, [summary, table, plot])
        gr.on(events, lambda f: sets_table(extra=f), picker, sets, queue=False)

        def choose(evt: gr.SelectData):
            return evt.row_value[0] if evt.row_value else gr.skip()

        sets.select(choose, None, picker)
        build_lab_panel(picker, events)
        if not is_public:
            if train_timer is not None:
                build_train_panel(train_timer)
            _export_section(picker)


def _export_section(picker: gr.Dropdown) -> None:
    """Export and push: only outside public mode (files land on the server; push uses its
    token)."""
    gr.Markdown("### Export the active set\nWrites it in the SAELens layout with a "
                "README.md model card under `checkpoints/export/<name>`.")
    with gr.Row():
        export_name = gr.Textbox(label="Export folder name (default: the set's name)",
                                 max_length=MAX_NAME_CHARS)
        repo = gr.Textbox(label="Hub repo id for the model card and push",
                          placeholder="you/my-saes", max_length=MAX_REPO_CHARS)
    with gr.Row():
        export = gr.Button("Export")
        push = gr.Button("Push to the Hub", visible=get_token() is not None)
    export_status = gr.Markdown()
    export.click(export_set, [picker, export_name, repo], export_status)
    push.click(push_set, [picker, export_name, repo], export_status)
