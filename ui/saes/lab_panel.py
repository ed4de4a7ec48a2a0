"""The SAE lab in the SAEs tab: the active set's SAEs on the L0 vs FVU plane (and L0 vs CE
loss recovered), the lab experiments run on its model (checkpoints/lab, made by
`python scripts/lab.py ...`), and outside public mode a small sweep on one layer, with a
progress bar."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from sae_core.activations import parse_hookpoint
from sae_core.atlas.layout import is_built, read_info, read_metrics
from sae_core.atomic import CorruptFile, read_json
from sae_core.config import TRAIN_FORM_LIMITS, TrainConfig
from sae_core.errors import BadInput
from sae_core.lab.experiments import SWEEPABLE
from sae_core.lab.run import LAB_ROOT, LabConfig, run_lab
from sae_core.lab.table import table_markdown

from ..serving import builds, public, session
from ..serving.errors import NotReady, friendly, text_arg
from ..shared.sites import hookpoint_at, layer_key
from .lab_figures import figure_kind, frontier_figure

SWEEP_TOKENS = 32_768
"""Training rows of an app sweep: about a minute per value on 2 cores at width 4,608."""
MAX_VALUES, MAX_RUNS, MAX_VALUES_CHARS = 6, 50, 100
PARAMS = [("k (TopK: active latents per token)", "k"),
          ("L1 coefficient (ReLU)", "l1_coeff"), ("width (x d_model)", "expansion")]


def _set_folder(folder) -> Path | None:
    """The set's folder when a visitor may open it and it is built (`session.check_folder`:
    in public mode only served sets), else None."""
    if not isinstance(folder, str) or not folder:
        return None
    try:
        path = session.check_folder(folder)
    except ValueError:
        return None
    return path if is_built(path) else None


def set_frontier(folder: str | None):
    """One point per SAE of the set: its held-out L0 against FVU and CE loss recovered."""
    folder = _set_folder(folder)
    if folder is None:
        return None
    rows = [{"label": str(layer_key(h)), "l0": m["l0"], "fvu": m["fvu"],
             "ce_recovered": m.get("ce_recovered")} for h, m in read_metrics(folder).items()]
    return frontier_figure(rows, "This set's SAEs (one point per layer, labelled by layer)",
                           kind="layers")


def lab_runs(folder: str | None, root: Path = LAB_ROOT) -> dict[str, dict]:
    """{choice label: results.json} of the lab runs on the set's model and the synthetic
    ones, newest first; unreadable runs are skipped."""
    folder = _set_folder(folder)
    model = read_info(folder).model if folder else None
    runs = {}
    paths = sorted(root.glob("*/results.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in paths[:MAX_RUNS]:
        try:
            res = read_json(path)
        except (CorruptFile, OSError, ValueError):
            continue
        if isinstance(res, dict) and res.get("model") in (model, None) and res.get("rows"):
            runs[f"{path.parent.name}: {res.get('title', '')}"] = res
    return runs


def show_run(results: dict | None):
    """(figure, table) of one run's results."""
    if not results:
        return None, "No lab runs for this model yet."
    rows = results["rows"]
    fig = frontier_figure(rows, results["title"], kind=figure_kind(results))
    return fig, f"{results['title']}\n\n{table_markdown(rows)}"


def parse_values(text: str, param: str) -> tuple[float, ...]:
    """"8, 16,32" -> (8, 16, 32), each within what a visitor may ask for the parameter
    (config.TRAIN_FORM_LIMITS, as the train form); a plain reason else."""
    text = text_arg(text, "The values", MAX_VALUES_CHARS)
    if param not in SWEEPABLE:
        raise gr.Error(f"sweep one of {', '.join(SWEEPABLE)}")
    limit = TRAIN_FORM_LIMITS[param]
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    if not 1 <= len(parts) <= MAX_VALUES:
        raise gr.Error(f"give 1 to {MAX_VALUES} numbers for {param}, got {len(parts)}")
    try:
        values = [limit.check(p, param, from_text=True) for p in parts]
    except BadInput as err:
        raise gr.Error(f"values must be numbers like 8,16,32: {err}") from None
    return tuple(sorted(set(values)))


@friendly("running the sweep")
def run_sweep(folder: str | None, layer, param: str, values_text: str,
              progress=gr.Progress()):  # noqa: B008 - Gradio's idiom
    """Train one SAE per value on SWEEP_TOKENS rows of one layer of the set's model."""
    if public.policy().public:  # never registered then; refused anyway
        raise gr.Error("This public demo does not run sweeps.")
    if _set_folder(folder) is None:
        raise NotReady(builds.waiting_text("A sweep on one layer of the set's model"))
    values = parse_values(values_text, param)
    info = read_info(folder)
    hookpoint = hookpoint_at(list(read_metrics(folder)), layer)
    number, site = parse_hookpoint(hookpoint)
    trained = info.train_cfg
    base = TrainConfig(architecture="relu" if param == "l1_coeff" else "topk",
                       k=int(trained.get("k", 32)), expansion=int(trained.get("expansion", 8)))
    lab = LabConfig(model=info.model, layer=number, site=site or "resid",
                    corpus=info.corpus, seq_len=int(info.seq_len),
                    tokens=SWEEP_TOKENS, param=param, values=values)
    out = run_lab("sweep", lab, base, lm=session.model(info.model),
                  report=lambda msg, frac, **_: progress(frac, desc=msg))
    runs = lab_runs(folder)
    label = next(iter(runs), None)
    fig, md = show_run(runs.get(label))
    return fig, md, gr.Dropdown(choices=list(runs), value=label), f"Saved in `{out}`."


def build_lab_panel(picker: gr.Dropdown, events: list) -> None:
    """The lab section; `events` redraw it when the active set changes."""
    gr.Markdown("### SAE lab\nEach point is one SAE: how many features it uses per token (L0, "
                "right is denser) against what it misses (FVU, lower is better) and how much "
                "of the model's next-word prediction survives with it in place (CE loss "
                "recovered, higher is better). Lab runs train several SAEs on the same "
                "tokens with one thing changed; `docs/sae_lab.md` says how to run them.")
    frontier = gr.Plot(set_frontier(picker.value))
    runs = lab_runs(picker.value)
    first = next(iter(runs), None)
    run = gr.Dropdown(list(runs), value=first, label="Lab runs on this model")
    fig, md = show_run(runs.get(first))
    run_plot, run_table = gr.Plot(fig), gr.Markdown(md)
    gr.on(events, set_frontier, picker, frontier)

    def pick(choice, folder):
        return show_run(lab_runs(folder).get(choice))

    run.change(pick, [run, picker], [run_plot, run_table])
    if public.policy().public:
        return
    with gr.Row():
        layer = gr.Textbox("12", label="Layer", max_length=40)
        param = gr.Dropdown(PARAMS, value="k", label="Sweep")
        values = gr.Textbox("16,32,64", label="Values", max_length=MAX_VALUES_CHARS)
    go = gr.Button(f"Run a small sweep ({SWEEP_TOKENS:,} tokens per SAE)")
    status = gr.Markdown()
    go.click(run_sweep, [picker, layer, param, values], [run_plot, run_table, run, status],
             concurrency_limit=1)
