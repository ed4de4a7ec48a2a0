"""A Gemma Scope 2 attention SAE (attn_out/, TransformerLens attn.hook_z: o_proj's input,
heads x head_dim wide, wider than d_model here) loads onto a gemma3 model as an atlas at
`layers.N.attn_z` and feeds every reader: quality row, feature index, feature page (its
logit lens through o_proj), live view and steering."""

import dataclasses
import json

import numpy as np
import torch
from safetensors.torch import save as st_bytes

from sae_core.explore.feature_index import ensure_feature_index
from sae_core.explore.feature_page import feature_page
from sae_core.explore.live import live_view
from sae_core.hub import pretrained_atlas as hub_atlas
from sae_core.steer.edits import FeatureSteer, Steering
from sae_core.steer.generation import GenConfig, generate, prompt_ids
from tests.hub.repos import put_repo
from tests.models.test_attn_sites import _lm
from ui.serving import session

REPO, PATH, S = "google/gemma-scope-2-270m-pt", "attn_out/layer_1_width_16k_l0_small", 48


def test_attn_z_set_feeds_every_reader(tmp_path, tiny_atlas):
    lm = dataclasses.replace(_lm("gemma3"), name="tiny-gemma3-wide")
    width = lm.width_of("layers.1.attn_z")
    assert width != lm.d_model  # 4 heads x 16 against 32
    rng = np.random.default_rng(0)
    w = {"w_enc": rng.normal(size=(width, S)), "w_dec": rng.normal(size=(S, width)) / 8,
         "b_enc": np.zeros(S), "b_dec": np.zeros(width), "threshold": np.full(S, 0.05)}
    files = {f"{PATH}/params.safetensors": st_bytes(
        {k: torch.tensor(v, dtype=torch.float32) for k, v in w.items()})}
    cache = put_repo(tmp_path / "cache", REPO, files)
    session.register_model(lm)
    corpus = json.loads((tiny_atlas / "atlas.json").read_text())["corpus"]
    out, _ = hub_atlas.load_pretrained_atlas(
        REPO, PATH, model=lm.name, lm=lm, name="z", root=tmp_path / "atlas", cache_dir=cache,
        corpus=corpus, seq_len=16, held_out=8)
    loaded = session.open_atlas(out)
    h = "layers.1.attn_z"
    assert list(loaded.info.hookpoints) == [h] and loaded.saes[h].cfg.d_in == width
    assert loaded.medians[h] > 0 and loaded.metrics[h]["fvu"] >= 0
    ensure_feature_index(out, lm=loaded.lm)
    page = feature_page(loaded, h, 3)
    assert page is not None
    view = live_view(loaded, "the cat sat on the mat")
    assert view.hookpoints == (h,)
    gen = GenConfig(max_new_tokens=4)
    ids = prompt_ids(lm, "the cat sat", gen)
    steps = []
    generate(lm, loaded.saes, {h: loaded.medians[h]}, ids,
             [None, Steering((FeatureSteer(h, 3, 4.0),))], gen, on_step=steps.append)
    assert not torch.allclose(steps[0][0], steps[0][1])
