"""SAE Atlas: what each layer of a language model computes, seen through sparse autoencoders.

`python app.py` builds the default atlas if it is missing (one TopK SAE per layer of the
embedded SmolLM2-135M-Instruct), then serves the app on http://127.0.0.1:7860.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gradio as gr

from sae_core.atlas.build import build_atlas
from sae_core.atlas.layout import DEFAULT_ATLAS, is_built
from sae_core.explore.feature_index import ensure_feature_index
from sae_core.explore.layermap import ensure_layer_map
from sae_core.progress import console_report
from ui.choice import wire_choices
from ui.features import build_features_tab, connect_features
from ui.layer_map import build_layer_map_tab
from ui.live import build_live_tab
from ui.saes import atlas_choices, build_saes_tab
from ui.search import build_search_tab
from ui.steering import build_steering_tab

INTRO = """# SAE Atlas
A language model turns text into a long list of numbers at every layer. A **sparse
autoencoder (SAE)** rewrites each layer's numbers as a few active *features* out of thousands,
and features are often readable: "a French city", "the end of a sentence".
This page shows how faithful those rewrites are, layer by layer."""


def build_app(atlas: Path = DEFAULT_ATLAS) -> gr.Blocks:
    with gr.Blocks(title="SAE Atlas") as demo:
        gr.Markdown(INTRO)
        choices = atlas_choices(atlas)
        # The active SAE set: every tab reads its folder from this picker.
        picker = gr.Dropdown(choices, value=str(atlas) if choices else None, label="SAE set")
        layer_map = build_layer_map_tab(picker)
        features = build_features_tab(picker, steering=True)
        build_saes_tab(picker)
        steering = build_steering_tab(picker)
        live = build_live_tab(picker)
        search = build_search_tab(picker)
        # A row clicked in the Live view or Search tab opens that feature's page.
        chosen = gr.State(None)
        wire_choices(chosen, [live.table, *search.tables], (live.chosen_md, search.chosen_md))
        connect_features(features, layer_map=layer_map, steering=steering, chosen=chosen)
    return demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--no-build", action="store_true", help="serve without building")
    args = parser.parse_args()
    if not args.no_build:
        if not is_built(DEFAULT_ATLAS):
            print("Building the default atlas (one SAE per layer, its layer map and feature "
                  "index; about 20 minutes on 2 cores)...")
            build_atlas(DEFAULT_ATLAS, report=console_report())
        ensure_layer_map(DEFAULT_ATLAS, report=console_report())
        ensure_feature_index(DEFAULT_ATLAS, report=console_report())
    build_app(DEFAULT_ATLAS).launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
