"""The app's one build worker, and the panel above the tabs that shows its progress.

Every visitor sees the same build (one at a time, sae_core/jobs). A timer polls the
worker's status while it runs; when a part of an atlas is ready (SAEs, layer map, feature
index, presets) the picker gains the atlas and `refreshed` changes, so every tab redraws
without a restart.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import gradio as gr

from sae_core.atlas.layout import DEFAULT_ATLAS, is_built, list_atlases
from sae_core.jobs.stages import QUICK_NAME, BuildJob, is_quick
from sae_core.jobs.status import BuildStatus
from sae_core.jobs.worker import BuildWorker, WorkerBusy
from sae_core.lm import EMBEDDED, EMBEDDED_ID

from . import session
from .errors import NotReady

POLL_S = 2.0
WORKER = BuildWorker(lambda name: session.model(EMBEDDED_ID if name == EMBEDDED else name))


def start(job: BuildJob, then: BuildJob | None = None) -> BuildStatus:
    """Start a build (and `then` after it) for a visitor: a busy worker is a plain message,
    not a crash."""
    try:
        return WORKER.start(job, then)
    except (WorkerBusy, ValueError) as err:
        raise gr.Error(str(err)) from err


def build_parts(folder: str | None, *parts: str) -> str:
    """Queue the missing derived parts of a finished atlas (layer map, feature index)."""
    try:
        if not folder or not is_built(session.check_folder(folder)):
            raise ValueError("pick a finished SAE set first")
    except ValueError as err:  # never a new build at a path a visitor typed
        raise gr.Error(str(err)) from err
    start(BuildJob(Path(folder), parts=("SAEs", *parts)))
    return (f"Building the {' and '.join(parts)} in the background (progress above); this tab "
            "fills in when it is ready.")


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "estimating the time left"
    return f"about {max(1, round(seconds / 60))} min left" if seconds >= 60 else (
        f"about {seconds:.0f} s left")


def status_text(status: BuildStatus) -> str:
    """What a visitor reads about the build, plain words first, numbers after."""
    if status.state == "idle" or status.folder is None:
        return ""
    name = status.folder.name
    if status.state == "failed":
        return f"**Building `{name}` failed:** {status.error}"
    if status.state == "cancelled":
        return f"Building `{name}` was cancelled at {status.stage}; starting it again resumes it."
    if status.state == "done":
        return f"`{name}` is ready: {', '.join(status.ready)}."
    numbers = [f"{100 * status.fraction:.0f}% of this part", _minutes(status.eta_s)]
    if status.tok_s:
        numbers.append(f"{status.tok_s:,.0f} tokens/s")
    if status.mean_fvu is not None:
        numbers.append(f"mean FVU {status.mean_fvu:.3f}")
    done = f" Ready so far: {', '.join(status.ready)}." if status.ready else ""
    return (f"{_round(status.folder)}**Building `{name}`: {status.stage}** "
            f"({'; '.join(numbers)}).{done} Tabs fill in as each part is ready.\n\n"
            f"<small>{status.message}</small>")


def _round(folder: Path) -> str:
    """Which of the first build's two rounds runs, and what is served meanwhile."""
    if is_quick(folder):
        return ("First a quick atlas (every third layer, a small sample of text: a few "
                "minutes), served as soon as it is ready; the full atlas builds after it. ")
    if folder.name == DEFAULT_ATLAS.name and is_built(folder.parent / QUICK_NAME):
        return "Serving the quick atlas while the full one builds; it takes over when done. "
    return ""


def waiting_text(what: str, *, now: bool = True) -> str:
    """Plain words for a tab with no SAE set to show: what it will show, and when (`now`:
    the build's stage and time left; text drawn once for every visitor points at the
    progress panel instead)."""
    status = WORKER.status()
    if status.active and status.folder is not None:
        when = f"now: {status.stage}, {_minutes(status.eta_s)}" if now else \
            "its progress is above the tabs"
        return (f"{what} will appear here when the SAE set `{status.folder.name}` is built "
                f"({when}). Nothing to do: the tab fills in by itself.")
    return (f"{what} will appear here once there is an SAE set: pick one above the tabs, or "
            "train or load one in the SAEs tab.")


def need_set(folder: str | None, what: str) -> str:
    """`folder`, or NotReady saying what the tab will show and when (`waiting_text`)."""
    if not folder or not isinstance(folder, str):
        raise NotReady(waiting_text(what))
    return folder


def picker_info(status: BuildStatus) -> str:
    """The SAE-set picker's note: the set being built, until its SAEs join the list."""
    if status.active and status.folder is not None and "SAEs" not in status.ready:
        return (f"Being built: {status.folder.name} ({status.stage}, {_minutes(status.eta_s)}"
                "); it joins this list when its SAEs are trained.")
    return ""


def refresh_key(status: BuildStatus) -> str:
    """Changes exactly when a part of the built atlas appears."""
    return f"{status.folder}|{','.join(status.ready)}|{status.state}" if status.folder else ""


def poll(current: str | None, last_key: str):
    """(panel row, panel text, picker, refreshed key, timer) after one look at the worker."""
    status = WORKER.status()
    key = refresh_key(status)
    picker = gr.skip()
    if key != last_key and status.folder is not None and "SAEs" in status.ready:
        choices = sorted({*list_atlases(), *([current] if current else []), str(status.folder)})
        # a visitor with nothing to look at yet gets the new atlas at once; the full atlas,
        # once whole, takes over from the quick one
        takes_over = (current and is_quick(current) and status.state == "done"
                      and not is_quick(status.folder))
        picker = gr.Dropdown(choices=choices, value=str(status.folder) if takes_over
                             or not current else current, info=picker_info(status))
    elif key != last_key:  # a build started or ended: the note says what is being built
        picker = gr.Dropdown(info=picker_info(status))
    return (gr.Row(visible=status.state != "idle"), status_text(status), picker,
            key if key != last_key else gr.skip(), gr.Timer(active=status.active))


class BuildPanel(NamedTuple):
    refreshed: gr.Textbox
    """Hidden; changes when a part of an atlas is built (tabs redraw on it)."""
    timer: gr.Timer
    """Polls the worker while a build runs; set it active after starting one."""


def build_status_panel(picker: gr.Dropdown, *, can_cancel: bool) -> BuildPanel:
    """The progress panel above the tabs. `can_cancel=False` (public mode): no visitor may
    stop the shared build."""
    status = WORKER.status()
    with gr.Row(visible=status.state != "idle") as row:
        panel = gr.Markdown(status_text(status))
        cancel = gr.Button("Cancel the build", size="sm", scale=0, visible=can_cancel)
    refreshed = gr.Textbox(refresh_key(status), visible=False)
    timer = gr.Timer(POLL_S, active=status.active)
    timer.tick(poll, [picker, refreshed], [row, panel, picker, refreshed, timer], queue=False,
               show_progress="hidden")
    if can_cancel:
        cancel.click(WORKER.cancel, None, None, queue=False)
    return BuildPanel(refreshed, timer)


def atlas_events(picker: gr.Dropdown, refreshed: gr.Textbox | None) -> list:
    """Triggers for "the active atlas changed": a new choice, or a part of it got built."""
    return [picker.change, *([refreshed.change] if refreshed is not None else [])]
