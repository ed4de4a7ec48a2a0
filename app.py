"""SAE Atlas: what each layer of a language model computes, seen through sparse autoencoders.

`python app.py` serves the app at once on http://127.0.0.1:7860 (or GRADIO_SERVER_NAME /
GRADIO_SERVER_PORT / PORT) and builds a missing default atlas (one TopK SAE per layer of the
embedded SmolLM2-135M-Instruct, its layer map, feature index and presets) in the background,
or takes a prebuilt one from the Hub with SAE_ATLAS_REPO=USER/REPO[@revision]. Models and
SAEs run on `--device` (or SAE_ATLAS_DEVICE): cpu by default, auto, cuda or mps.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

import gradio as gr

from sae_core.atlas.layout import DEFAULT_ATLAS, is_built
from sae_core.precision import DEVICES
from ui.api import register_api
from ui.features.tab import build_features_tab, connect_features
from ui.layer_map.tab import build_layer_map_tab
from ui.live.tab import build_live_tab
from ui.saes.tab import atlas_choices, build_saes_tab
from ui.search.tab import build_search_tab
from ui.serving import session
from ui.serving.builds import WORKER, build_status_panel, picker_info
from ui.serving.links import wire_links
from ui.serving.public import Policy, set_policy
from ui.serving.serve import ServeError, cap_malloc_arenas, is_public, queue_options, server_address
from ui.serving.startup import choose_atlas
from ui.shared.choice import wire_choices
from ui.shared.present import wire_present_mode
from ui.steering.tab import build_steering_tab
from ui.tour.tab import build_tour_tab, connect_tour

INTRO = """# SAE Atlas
A language model turns text into a long list of numbers at every layer. A **sparse
autoencoder (SAE)** rewrites each layer's numbers as a few active *features* out of thousands,
and features are often readable: "a French city", "the end of a sentence".
This page shows how faithful those rewrites are, layer by layer."""


def mcp_available() -> bool:
    """Gradio's MCP server needs its `mcp` extra (requirements.txt installs it)."""
    return importlib.util.find_spec("mcp") is not None


def build_app(atlas: Path = DEFAULT_ATLAS, *, public: bool = False) -> gr.Blocks:
    """The app over `atlas` (built, being built in the background, or missing). `public`:
    a Space for strangers (no push, no free model ids, nobody can cancel the build)."""
    with gr.Blocks(title="SAE Atlas") as demo:
        gr.Markdown(INTRO)
        choices = atlas_choices(atlas)
        # The active SAE set: every tab reads its folder from this picker.
        picker = gr.Dropdown(choices, value=str(atlas) if is_built(atlas) else None,
                             label="SAE set", info=picker_info(WORKER.status()))
        panel = build_status_panel(picker, can_cancel=not public)
        link_notice = gr.Markdown(visible=False)  # what a deep link could not open
        with gr.Tabs() as tabs:
            tour = build_tour_tab(picker)
            layer_map = build_layer_map_tab(picker, refreshed=panel.refreshed)
            features = build_features_tab(picker, steering=True, refreshed=panel.refreshed)
            build_saes_tab(picker, train_timer=panel.timer, refreshed=panel.refreshed)
            steering = build_steering_tab(picker, refreshed=panel.refreshed)
            live = build_live_tab(picker)
            search = build_search_tab(picker, refreshed=panel.refreshed)
        # A row clicked in the Live view or Search tab opens that feature's page.
        chosen = gr.State(None)
        wire_choices(chosen, [live.table, *search.tables], (live.chosen_md, search.chosen_md))
        connect_features(features, layer_map=layer_map, steering=steering, chosen=chosen)
        connect_tour(tour, picker, steering)
        wire_links(demo, tabs, picker, link_notice, features, steering)
        wire_present_mode(demo)
        register_api(lambda: atlas_choices(atlas), str(atlas))
    return demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=None,
                        help="default: GRADIO_SERVER_PORT, then PORT, then 7860")
    parser.add_argument("--host", default=None,
                        help="default: GRADIO_SERVER_NAME, then 127.0.0.1")
    parser.add_argument("--public", action="store_true",
                        help="serve strangers (on when SPACE_ID is set): no push, no free ids")
    parser.add_argument("--no-build", action="store_true",
                        help="serve without building a missing default atlas")
    parser.add_argument("--device", default=None,
                        help=f"where models and SAEs run: {', '.join(DEVICES)} (default: "
                             f"{session.DEVICE_ENV}, then cpu)")
    args = parser.parse_args()
    try:
        host, port = server_address(args.host, args.port, os.environ)
        session.set_device(session.choose_device(args.device, os.environ))
    except (ServeError, ValueError) as err:
        parser.error(str(err))
    public = is_public(args.public, os.environ)
    cap_malloc_arenas()  # before the server's threads start
    set_policy(Policy.for_mode(public))
    # the owner's own atlas repo, not a visitor's request: the server's token may read it
    start = choose_atlas(os.environ, build=not args.no_build)
    for note in start.notes:
        print(note)
    demo = build_app(start.atlas, public=public)
    demo.queue(**queue_options(public)).launch(server_name=host, server_port=port,
                                               mcp_server=mcp_available())


if __name__ == "__main__":
    main()
