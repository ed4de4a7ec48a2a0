"""Deep links: the page's query string opens a tab, a feature's page or a steering preset.

- `?layer=11&feature=694` opens the Features tab on that feature (a layer number names the
  layer's residual SAE first; `layer=11.mlp` or `layer=11 (MLP out)` a site, ui/shared/sites.py);
- `?tab=steering&preset=ocean` opens the Steering tab with that preset loaded;
- `?tab=steering&layer=11&feature=694&strength=0.4` opens the Steering tab on that feature;
- `?tab=<id>` selects a tab (ids in `TAB_IDS`).

A bad value (not a whole number, out of range, an unknown tab or preset) is dropped with a
plain message, and the view it would have opened falls back to the default. Links name
features of the SAE set the page opens with (the app's default set).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr

from sae_core.activations import parse_hookpoint
from sae_core.atlas.layout import read_info
from sae_core.errors import BadInput, check_number, check_whole
from sae_core.steer.edits import MAX_STRENGTH
from sae_core.steer.presets import read_presets

from ..shared.sites import as_key, hookpoint_at, layer_key, number_key

TAB_IDS = ("tour", "layer-map", "features", "saes", "steering", "live-view", "search")
"""Every tab's id, as each tab module sets it with `gr.Tab(id=...)`."""
MAX_VALUE_CHARS = 64
"""Longer query values are refused: no id or preset name is that long."""
MAX_ID = 999_999_999
"""The largest layer or feature number a link names."""
_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]*")


@dataclass(frozen=True)
class Link:
    """What a page's query string asks for, each field checked (None: not asked or bad)."""

    tab: str | None = None
    """The tab named by `tab=`; without it the rest implies one (see `target`)."""
    layer: int | str | None = None
    """A layer key (ui/shared/sites.py); layer and feature come together or not at all."""
    feature: int | None = None
    strength: float | None = None
    """Steering strength, in multiples of the layer's typical size."""
    preset: str | None = None
    """A steering preset's slug, e.g. "ocean"."""
    problems: tuple[str, ...] = ()
    """Plain messages about the values that were dropped."""

    @property
    def target(self) -> str | None:
        """The tab to open; None keeps the default view."""
        if self.tab:
            return self.tab
        if self.feature is not None:
            return "features"
        if self.preset is not None or self.strength is not None:
            return "steering"
        return None

    @property
    def message(self) -> str:
        if not self.problems:
            return ""
        return "**This link could not be followed in full.** " + " ".join(self.problems)


def _shown(text: str) -> str:
    """A query value quoted in a message: only plain characters, short (a stranger writes
    links that other visitors open, so nothing of it may become markup)."""
    kept = re.sub(r"[^A-Za-z0-9 ._-]", "", text)[:20]
    return f"“{kept}”" if kept else "an unreadable value"


def _values(params: Mapping) -> tuple[dict[str, str], list[str]]:
    """Known keys as stripped strings (the last one if a key repeats), and problems."""
    values, problems = {}, []
    for key in ("tab", "layer", "feature", "strength", "preset"):
        value = params.get(key)
        if isinstance(value, list | tuple):
            value = value[-1] if value else None
        if value is None:
            continue
        text = str(value).strip()
        if len(text) > MAX_VALUE_CHARS:
            problems.append(f"The {key} in the link is too long, so it was ignored.")
        else:
            values[key] = text
    return values, problems


def _feature(values: dict[str, str], problems: list[str]
             ) -> tuple[int | str | None, int | None]:
    if "layer" not in values and "feature" not in values:
        return None, None
    if "layer" not in values or "feature" not in values:
        problems.append("A link to a feature needs both a layer and a feature number.")
        return None, None
    try:
        layer = as_key(values["layer"])
    except ValueError:
        layer = None
    try:  # as a form reads it (errors.check_number): " 7 ", "7.0" and "7e0" are 7
        if layer is None:
            raise BadInput("layer", "no layer key")
        return layer, check_whole(values["feature"], "feature", 0, MAX_ID, from_text=True)
    except BadInput as err:
        key = err.field
        problems.append(f"The {key} {_shown(values[key])} is not a whole number of 0 or "
                        "more, so the feature was not opened.")
        return None, None


def parse_link(params: Mapping, tab_ids: Sequence[str] = TAB_IDS) -> Link:
    """The link in a page's query parameters (`request.query_params`, or any mapping of
    str to str or to a list of str). Pure: checks the form of each value, not whether the
    atlas has that layer or preset (`check_link` does). Unknown keys are ignored."""
    values, problems = _values(params)
    tab = None
    if "tab" in values:
        name = values["tab"].lower().replace("_", "-")
        if name in tab_ids:
            tab = name
        else:
            problems.append(f"There is no tab {_shown(values['tab'])}; the tabs are "
                            f"{', '.join(tab_ids)}.")
    layer, feature = _feature(values, problems)
    strength = None
    if "strength" in values:
        try:
            strength = check_number(values["strength"], "strength", -MAX_STRENGTH,
                                    MAX_STRENGTH, from_text=True)
        except BadInput:
            problems.append(f"The strength {_shown(values['strength'])} is not a number "
                            f"between -{MAX_STRENGTH:g} and {MAX_STRENGTH:g}.")
            strength = None
    preset = None
    if "preset" in values:
        name = values["preset"].lower()
        if _SLUG.fullmatch(name):
            preset = name
        else:
            problems.append(f"There is no preset {_shown(values['preset'])}.")
    return Link(tab, layer, feature, strength, preset, tuple(problems))


def check_link(link: Link, layers: Mapping[int | str, int], presets: Collection[str] | None
               ) -> Link:
    """`link` without what the atlas lacks: `layers` maps each layer key (`atlas_layers`)
    to its number of features, `presets` holds the known preset slugs (None: not prepared
    yet)."""
    problems = list(link.problems)
    if link.feature is not None:
        if link.layer not in layers:
            shown = ", ".join(map(str, layers)) or "none"
            problems.append(f"This SAE set has no layer {link.layer} (its layers: {shown}).")
            link = replace(link, layer=None, feature=None)
        elif link.feature >= layers[link.layer]:
            problems.append(f"Layer {link.layer} has features 0 to {layers[link.layer] - 1}, "
                            f"not {link.feature}.")
            link = replace(link, layer=None, feature=None)
    if link.preset is not None and link.preset not in (presets or ()):
        known = (", ".join(presets) or "none for this SAE set") if presets is not None else (
            "not prepared yet for this SAE set")
        problems.append(f"There is no preset {_shown(link.preset)} (presets: {known}).")
        link = replace(link, preset=None)
    return replace(link, problems=tuple(problems))


def atlas_layers(folder: str | Path | None) -> dict[int | str, int]:
    """Layer key (ui/shared/sites.py) -> number of features, read from the atlas's files (no
    model load); a bare layer number also names the layer's first SAE (residual first)
    when the set has no residual one there."""
    try:
        hookpoints = list(read_info(folder).hookpoints)
    except (TypeError, OSError, ValueError, KeyError):
        return {}
    out: dict[int | str, int] = {}
    for h in hookpoints:
        try:
            cfg = json.loads((Path(folder) / h / "cfg.json").read_text())
            out[layer_key(h)] = int(cfg["d_sae"])
        except (OSError, ValueError, KeyError):
            continue
    for h in hookpoints:  # a number where only other sites are: the first of them
        n = parse_hookpoint(h)[0]
        if layer_key(hookpoint_at(hookpoints, n)) in out:
            out.setdefault(n, out[layer_key(hookpoint_at(hookpoints, n))])
    return out


def tabs_by_id(tabs: gr.Tabs) -> dict[str, gr.Tab]:
    """The tabs of `tabs` by their ids (each tab module sets its own)."""
    return {str(tab.id): tab for tab in tabs.children if isinstance(tab, gr.Tab)}


COPY_JS = """(...values) => {
  const keys = %s;
  const url = new URL(window.location.href);
  url.search = ""; url.hash = "";
  Object.entries(%s).forEach(([k, v]) => url.searchParams.set(k, v));
  keys.forEach((k, i) => {
    if (values[i] !== null && values[i] !== undefined && values[i] !== "")
      url.searchParams.set(k, String(values[i]));
  });
  const link = url.toString();
  if (navigator.clipboard) navigator.clipboard.writeText(link).catch(() => {});
  return link;
}"""


def copy_link_row(label: str, keys: dict[str, gr.components.Component],
                  fixed: dict[str, str] | None = None) -> gr.Textbox:
    """A "copy link" button and the link as text (for pages where the clipboard is blocked),
    built in the browser from the current values of `keys`' components plus `fixed`."""
    with gr.Row():
        button = gr.Button(label, size="sm", scale=0, min_width=180)
        text = gr.Textbox(label="Link", interactive=False, scale=4)
    js = COPY_JS % (json.dumps(list(keys)), json.dumps(fixed or {}))
    button.click(None, list(keys.values()), text, js=js)
    return text


def follow_link(link: Link, preset: bool) -> tuple:
    """Updates for (tabs, features layer, features feature, steering layer, steering feature,
    steering strength, notice[, steering preset]) that open `link`."""
    skip = gr.skip()
    target = link.target
    to_features = target == "features" and link.feature is not None
    to_steering = target == "steering" and link.feature is not None
    out = (gr.Tabs(selected=target) if target else skip,
           link.layer if to_features else skip, link.feature if to_features else skip,
           link.layer if to_steering else skip, link.feature if to_steering else skip,
           link.strength if target == "steering" and link.strength is not None else skip,
           gr.Markdown(link.message, visible=bool(link.message)))
    if preset:
        out += (link.preset if link.preset is not None else skip,)
    return out


def _as_shown(link: Link, folder: str | None) -> Link:
    """The link's layer as the tab it opens takes it: the Features tab's key of that SAE, or
    the Steering tab's layer number (a site it cannot name is dropped, saying so)."""
    try:
        hooks = list(read_info(folder).hookpoints)
        h = hookpoint_at(hooks, link.layer)
    except (TypeError, OSError, ValueError, KeyError):  # no set, or check_link dropped it
        return link
    if link.target != "steering":
        return replace(link, layer=layer_key(h))
    if isinstance(number := number_key(hooks, h), int):
        return replace(link, layer=number)
    return replace(link, layer=None, feature=None, problems=(*link.problems, (
        f"The Steering tab's layer field steers a layer's residual SAE; type {number}:"
        f"{link.feature}:0.4 under More features to steer with this one.")))


def wire_links(demo: gr.Blocks, tabs: gr.Tabs, picker: gr.Dropdown, notice: gr.Markdown,
               features, steering) -> None:
    """Add "copy link" rows to the Features and Steering tabs,
    and on page load follow the link in the page's query string (see the module doc).
    `features` and `steering` are the tabs' NamedTuples (ui.features.tab, ui.steering.tab); call
    after every tab is built, inside the app's Blocks."""
    named = tabs_by_id(tabs)
    if "features" in named:
        with named["features"]:
            copy_link_row("Copy a link to this feature",
                          {"layer": features.layer, "feature": features.feature})
    with steering.tab:
        copy_link_row("Copy a link to this steering", {
            "layer": steering.layer, "feature": steering.feature,
            "strength": steering.strength}, {"tab": "steering"})
    preset = getattr(steering, "preset", None)

    def open_link(folder: str | None, request: gr.Request):
        link = parse_link(dict(request.query_params) if request else {})
        found = read_presets(folder) if preset is not None and folder else None
        slugs = [p.slug for p in found.presets] if found else None
        return follow_link(_as_shown(check_link(link, atlas_layers(folder), slugs), folder),
                           preset is not None)

    outputs = [tabs, features.layer, features.feature, steering.layer, steering.feature,
               steering.strength, notice, *([preset] if preset is not None else [])]
    demo.load(open_link, picker, outputs, queue=False, api_visibility="private")
