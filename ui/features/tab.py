"""The Features tab: one feature's page (snippets, density, logit lens, layer-map label)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import NamedTuple

import gradio as gr

from sae_core.atlas.layout import read_info
from sae_core.errors import BadInput, check_whole
from sae_core.explore.feature_index import has_feature_index
from sae_core.explore.feature_page import check_ids, feature_page, open_index
from sae_core.explore.feature_path import feature_path
from sae_core.explore.lineage import read_lineage
from sae_core.explore.names import readable_names
from sae_core.hub.releases import neuronpedia_id_of
from sae_core.steer.pushed import PUSH_STRENGTH, pushed_tokens

from ..serving import builds, session
from ..serving.errors import NotReady, friendly
from ..shared.lineage_view import path_figure
from ..shared.names_view import feature_name, name_markdown, pushed_frame
from ..shared.present import numbers_accordion
from ..shared.sites import hookpoint_at, layer_choices, number_key, site_label
from .view import (
    activation_histogram,
    density_figure,
    logit_table,
    snippets_html,
    summary_markdown,
)

TAB_ID = "features"
FEATURES_INTRO = """Pick a layer and a feature to see where it fires: the passages of the
indexed text where it is strongest (each token shaded by how strongly the feature fires on
it; hover a token for the number), a few weaker examples, how often it fires, and which next
words its direction pushes the model towards (**logit lens**: the feature's decoder direction
read through the model's final norm and output layer)."""
PUSHED_NOTE = (f"Adds the feature's direction ({PUSH_STRENGTH:g} x the layer's typical size) "
               "while the model reads a few everyday sentences, and lists the next tokens "
               "whose probability rises most (mean over positions and sentences).")
LINEAGE_NOTE = ("**Through the layers:** the feature of each layer above and below whose "
                "decoder direction is closest to this one (cosine; hover for it and for how "
                "often the two fire on the same tokens). The path stops where no feature is "
                "close any more (cosine below 0.3).")
MAX_FEATURE = 10_000_000
"""Largest feature id the form takes (the layer's own width is checked too)."""
NO_INDEX = ("*This SAE set has no feature index yet. Building it runs the model and every "
            "SAE over ~65k tokens once (about two minutes for 30 layers on 2 CPU cores).*")


class FeaturesTab(NamedTuple):
    """What other tabs need to hand a feature over or take one from here."""

    layer: gr.Dropdown
    """Layer key (ui/shared/sites.py: the layer number, or e.g. "3 (MLP out)"); setting it (with
    `feature`) from another event shows that page."""
    feature: gr.Number
    """Feature id (int) within the layer."""
    steer: gr.Button
    """"Steer with this feature": wire it with `connect_features`."""
    picker: gr.Dropdown | None = None
    """The active atlas folder (the hand-over to steering reads its hookpoints)."""


PAGE_WHAT = "Each feature's page (where it fires most, and what it pushes the model to say)"

def _hookpoints(folder: str | None) -> list[str]:
    """The atlas's hookpoints from atlas.json: building the tab loads no model."""
    try:
        return list(read_info(folder).hookpoints)
    except (TypeError, OSError, ValueError, KeyError):
        return []


def _layers(folder: str | None) -> list[tuple[str, int | str]]:
    """(shown text, layer key) per SAE of the set (ui/shared/sites.py)."""
    return layer_choices(_hookpoints(folder))


def _first_layer(folder: str | None) -> int | str | None:
    """The key of the middle SAE, shown first."""
    ids = _layers(folder)
    return ids[len(ids) // 2][1] if ids else None


def _hookpoint(hookpoints: list[str], layer) -> str:
    """The atlas's hookpoint that the layer key `layer` names (a bare number: the residual
    one if there are several at that layer)."""
    if layer is None:
        raise ValueError("Pick a layer first.")
    return hookpoint_at(hookpoints, layer)


def page_outputs(folder: str | None, layer, feature) -> tuple:
    """(summary, activation histogram, logit table, snippets HTML, density plot) of a
    feature, or ValueError with a message for the user."""
    if not folder:  # the tab opened before any set exists: say what comes, no error
        return builds.waiting_text(PAGE_WHAT), None, None, "", None
    loaded = session.open_atlas(folder)  # the request's one check of the SAE files
    if not has_feature_index(Path(folder), loaded.fingerprint):
        return NO_INDEX, None, None, "", None
    hookpoint = _hookpoint(loaded.hookpoints, layer)
    page = feature_page(loaded, hookpoint, feature)
    stats = open_index(folder, loaded.fingerprint).layer_stats(hookpoint)
    density = density_figure(stats["n_fire"], page.n_tokens, layer=site_label(hookpoint),
                             mark=page.density)
    hist = None if page.dead else activation_histogram(page)
    name = feature_name(readable_names(folder, loaded.fingerprint), hookpoint, page.feature)
    np_id = neuronpedia_id_of(loaded.info.source, hookpoint)
    return (summary_markdown(page, name_markdown(name), neuronpedia=np_id), hist,
            logit_table(page), snippets_html(page), density)


def lineage_output(folder: str | None, layer, feature):
    """The feature followed through the layers (best decoder-cosine partner each way), or
    None when the atlas has no lineage yet."""
    if not folder:
        return None
    loaded = session.open_atlas(folder)
    if (lineage := read_lineage(folder, loaded.fingerprint)) is None:
        return None
    hookpoint = _hookpoint(loaded.hookpoints, layer)
    path = feature_path(lineage, hookpoint, check_ids(loaded, hookpoint, feature))
    names = readable_names(folder, loaded.fingerprint)
    found = {(s.hookpoint, s.feature): feature_name(names, s.hookpoint, s.feature)
             for s in path.steps}
    return path_figure(path, {key: name.text for key, name in found.items() if name})


def pushed_outputs(folder: str | None, layer, feature):
    """The table of tokens the feature makes more likely when pushed (steer/pushed.py)."""
    loaded = session.open_atlas(builds.need_set(folder, PAGE_WHAT))
    return pushed_frame(pushed_tokens(loaded, _hookpoint(loaded.hookpoints, layer), feature))


def step_feature(folder: str | None, layer, feature, step: int) -> int:
    """The feature `step` ids away, wrapping around the layer."""
    loaded = session.open_atlas(builds.need_set(folder, PAGE_WHAT))
    d_sae = loaded.saes[_hookpoint(loaded.hookpoints, layer)].cfg.d_sae
    try:
        return (check_whole(feature, "feature", 0, from_text=True) + step) % d_sae
    except BadInput:
        return 0


def random_alive(folder: str | None, layer, seed: int | None = None) -> int:
    """A random feature of the layer that fired at least once on the indexed text."""
    loaded = session.open_atlas(builds.need_set(folder, PAGE_WHAT))
    if not has_feature_index(Path(folder), loaded.fingerprint):
        raise ValueError("This SAE set has no feature index yet.")
    hookpoint = _hookpoint(loaded.hookpoints, layer)
    n_fire = open_index(folder, loaded.fingerprint).layer_stats(hookpoint)["n_fire"]
    alive = n_fire.nonzero().squeeze(1).tolist()
    if not alive:
        raise ValueError("No feature of this layer fired on the indexed text.")
    return random.Random(seed).choice(alive)


def _first_feature(folder: str | None, layer) -> int:
    """An alive feature to show first (reads the index only, no model)."""
    try:
        return random_alive(folder, layer, seed=0)
    except (NotReady, ValueError, FileNotFoundError, KeyError):  # no set yet: the page says so
        return 0


def _ui(fn):
    """Any failure as a clear message (ui/serving/errors.py) instead of a bare "Error"."""
    return friendly("showing the feature")(fn)


def build_features_tab(picker: gr.Dropdown, *, steering: bool = False,
                       refreshed: gr.Textbox | None = None) -> FeaturesTab:
    """`picker` holds the active atlas folder. With `steering=False` the steer button says
    that steering is not in this app yet; pass True when `connect_features` wires it. The tab
    redraws when `refreshed` says a part of the atlas was built (ui/serving/builds.py)."""
    with gr.Tab("Features", id=TAB_ID) as features_tab:
        gr.Markdown(FEATURES_INTRO)
        first_layer = _first_layer(picker.value)
        first = _first_feature(picker.value, first_layer)
        with gr.Row():
            layer = gr.Dropdown(_layers(picker.value), value=first_layer, label="Layer")
            feature = gr.Number(first, precision=0, minimum=0, maximum=MAX_FEATURE,
                                label="Feature")
            prev = gr.Button("◀ Previous")
            nxt = gr.Button("Next ▶")
            rand = gr.Button("Random alive feature")
            steer = gr.Button("Steer with this feature", variant="primary")
        build = gr.Button("Build the feature index",
                          visible=bool(picker.value) and not has_feature_index(
                              Path(picker.value)))
        summary = gr.Markdown()
        with numbers_accordion(), gr.Row():
            logits = gr.Dataframe(interactive=False, label="Logit lens: output tokens")
            hist = gr.Plot(label="Activation histogram")
        with gr.Row():
            push = gr.Button("What it does when pushed", size="sm", scale=1)
            gr.Markdown(PUSHED_NOTE, scale=4)
        pushed = gr.Dataframe(pushed_frame([]), interactive=False,
                              label="Next tokens it makes more likely")
        gr.Markdown(LINEAGE_NOTE)
        path = gr.Plot(label="Through the layers")
        snippets = gr.HTML()
        density = gr.Plot(label="Feature density of the layer")
        outputs = [summary, hist, logits, snippets, density]
        show_path = _ui(lineage_output)

        @friendly("switching the SAE set")
        def switch_atlas(folder):
            missing = bool(folder) and not has_feature_index(Path(folder))
            first_layer = _first_layer(folder)
            return (gr.Dropdown(choices=_layers(folder), value=first_layer),
                    gr.Button(visible=missing),
                    _first_feature(folder, first_layer))

        @friendly("starting the feature index")
        def build_index(folder):
            gr.Info(builds.build_parts(folder, "feature index"))
            return gr.Button(visible=False)

        show = _ui(page_outputs)
        # The model loads on first use (opening the tab), not when the app is built.
        features_tab.select(show, [picker, layer, feature], outputs)
        features_tab.select(show_path, [picker, layer, feature], path)
        for control in (layer, feature):
            control.change(show, [picker, layer, feature], outputs)
            control.change(show_path, [picker, layer, feature], path)
            control.change(lambda: pushed_frame([]), None, pushed, queue=False)  # not this one's
        push.click(friendly("pushing the feature")(pushed_outputs), [picker, layer, feature],
                   pushed)
        prev.click(_ui(lambda d, lay, f: step_feature(d, lay, f, -1)),
                   [picker, layer, feature], feature, queue=False)
        nxt.click(_ui(lambda d, lay, f: step_feature(d, lay, f, 1)),
                  [picker, layer, feature], feature, queue=False)
        rand.click(_ui(random_alive), [picker, layer], feature, queue=False)
        gr.on(builds.atlas_events(picker, refreshed), switch_atlas, picker,
              [layer, build, feature]).then(show, [picker, layer, feature], outputs)
        build.click(build_index, picker, build)
        if not steering:
            steer.click(lambda: gr.Info("Steering is not in this app yet."), None, None,
                        queue=False)
    return FeaturesTab(layer, feature, steer, picker)


def connect_features(tab: FeaturesTab, *, layer_map=None, steering=None,
                     chosen: gr.State | None = None) -> None:
    """Wire hand-overs once all tabs exist (call inside the app's Blocks):
    - `layer_map` (ui.layer_map.tab.LayerMapTab): selecting a row of a cell's feature table opens
      that feature's page here;
    - `steering` (ui.steering.tab.SteeringTab): "Steer with this feature" fills its layer and
      feature;
    - `chosen`: a gr.State holding (layer key, feature) or None (the live view's last pick);
      when it changes, that feature's page opens here.
    """
    if layer_map is not None:
        @friendly("opening the feature")
        def pick(layer, evt: gr.SelectData):
            row = evt.row_value or []
            if layer is None or not row:
                return gr.skip(), gr.skip()
            return layer, check_whole(row[0], "feature", 0, from_text=True)

        layer_map.cell.select(pick, layer_map.layer, [tab.layer, tab.feature], queue=False)
    if steering is not None:
        @friendly("handing the feature over")
        def hand_over(folder, layer, feature):
            # the Steering tab's layer field takes numbers (the residual SAE first)
            hooks = _hookpoints(folder)
            key = number_key(hooks, _hookpoint(hooks, layer))
            if not isinstance(key, int):
                raise gr.Error(f"The Steering tab's layer field steers a layer's residual "
                               f"SAE; to steer with this one, type {key}:{feature}:0.4 under "
                               "More features there.")
            gr.Info(f"Layer {layer}, feature {feature} is set in the Steering tab.")
            return key, feature

        tab.steer.click(hand_over, [tab.picker, tab.layer, tab.feature],
                        [steering.layer, steering.feature], queue=False)
    if chosen is not None:
        @friendly("opening the feature")
        def follow(pair):
            return (pair[0], int(pair[1])) if pair else (gr.skip(), gr.skip())

        chosen.change(follow, chosen, [tab.layer, tab.feature], queue=False)
