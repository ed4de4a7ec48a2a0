"""The Steering tab's presets: those resolved for the active SAE set (sae_core/steer/presets.py),
chosen by slug, so a link (`?tab=steering&preset=ocean`) can set one."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from sae_core.steer.presets import ResolvedPreset, is_preparing, read_presets

from ..serving import builds

PREPARING = ("Presets for this SAE set are being prepared (progress above): each one's feature "
             "is found with the concept finder below and checked by one short steering run. "
             "They appear here when ready.")
MISSING = ("This SAE set has no presets yet: press **Prepare presets** (each one's feature is "
           "found with the concept finder below and checked by one short steering run, about "
           "two minutes), or find features for a concept yourself below.")
N_CONTROLS = 10
"""prompt, layer, feature, strength, mode, positions, extra, max tokens, temperature, seed."""


def _preparing(folder: str) -> bool:
    status = builds.WORKER.status()
    building = status.active and status.folder == Path(folder).resolve()
    return building or is_preparing(folder)


def preset_choices(folder: str | None) -> tuple[list[tuple[str, str]], str, bool]:
    """(menu choices as (name, slug), a note for the visitor, whether the atlas still
    needs presets) for the SAE set in `folder`."""
    if not folder:
        return [], "Pick an SAE set to see its presets.", False
    resolved = read_presets(folder)
    if resolved is None:
        return [], PREPARING if _preparing(folder) else MISSING, True
    note = ""
    if resolved.failed:
        names = "; ".join(f.concept.name for f in resolved.failed)
        note = (f"Left out for this SAE set (no feature made the text name the concept more "
                f"than without steering): {names}.")
    return [(p.name, p.slug) for p in resolved.presets], note, False


def refresh_presets(folder: str | None, *, reset: bool = True) -> tuple:
    """(menu, note, prepare button) for the SAE set in `folder`; `reset` clears the choice
    (another SAE set), else the menu keeps its value (the same set, presets ready since)."""
    choices, note, missing = preset_choices(folder)
    menu = gr.Dropdown(choices=choices, value=None) if reset else gr.Dropdown(choices=choices)
    return menu, note, gr.Button(visible=missing)


def controls_of(p: ResolvedPreset) -> list:
    """The tab's controls for a preset, in N_CONTROLS' order."""
    c = p.concept
    return [c.prompt, p.layer, p.feature, p.strength, c.mode, c.positions, p.extra,
            c.max_new_tokens, c.temperature, c.seed]


def preset_controls(folder: str | None, slug: str | None) -> list:
    """The controls for preset `slug` of the active SAE set; no change when there is none
    (a link may name a preset this set left out)."""
    if not slug:
        return [gr.update()] * N_CONTROLS
    resolved = read_presets(folder) if folder else None
    preset = resolved.get(slug) if resolved else None
    if preset is None:
        gr.Warning(f"This SAE set has no preset {slug!r}" + (
            "" if resolved else " yet: its presets are not prepared") + ".")
        return [gr.update()] * N_CONTROLS
    return controls_of(preset)


def first_controls(folder: str | None, n_layers: int) -> dict:
    """What the tab shows before any choice: the first preset, else a plain example."""
    resolved = read_presets(folder) if folder else None
    if resolved and resolved.presets:
        p = resolved.presets[0]
        return {"prompt": p.concept.prompt, "layer": p.layer, "feature": p.feature,
                "strength": p.strength}
    return {"prompt": "Write a short story.", "layer": n_layers // 2, "feature": 0,
            "strength": 0.5}


def prepare_presets(folder: str | None) -> tuple:
    """Queue the presets of the SAE set (the build worker resolves them in the background)."""
    builds.need_set(folder, "The presets")
    gr.Info(builds.build_parts(folder, "presets"))
    menu, _, _ = refresh_presets(folder, reset=False)
    return menu, PREPARING, gr.Button(visible=False)
