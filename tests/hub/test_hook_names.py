"""Each suite's names for where its SAEs read, on real paths of SAELens 6.54.12's release
table, map onto our hookpoints; what has no hookpoint is refused with the reason; the HF
module names Gemma Scope 2 records name the very modules our hookpoints hook on gemma3."""

import pytest

from sae_core.hub.fetch import HubError
from sae_core.hub.hook_names import SuiteHook, hf_hookpoint, hook_of, suite_hook
from tests.models.families import family_lm

CASES = [
    ("google/gemma-scope-2-270m-pt", "resid_post/layer_12_width_16k_l0_small", ("layers.12", "")),
    ("google/gemma-scope-2-1b-it", "resid_post_all/layer_0_width_262k_l0_big", ("layers.0", "")),
    ("google/gemma-scope-2-27b-pt", "resid_post/layer_40_width_16k_l0_medium_seed_1",
     ("layers.40", "")),
    ("google/gemma-scope-2-270m-pt", "mlp_out_all/layer_7_width_16k_l0_small",
     ("layers.7.mlp", "")),
    ("google/gemma-scope-2-4b-pt", "mlp_out/layer_9_width_1m_l0_big", ("layers.9.mlp", "")),
    ("google/gemma-scope-2-270m-pt", "transcoder/layer_15_width_262k_l0_big_affine",
     ("layers.15.mlp", "layers.15.mlp_in")),
    ("google/gemma-scope-2-270m-it", "transcoder_all/layer_3_width_16k_l0_small",
     ("layers.3.mlp", "layers.3.mlp_in")),
    ("google/gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_71", ("layers.20", "")),
    ("google/gemma-scope-9b-it-res", "layer_9/width_131k/average_l0_121", ("layers.9", "")),
    ("google/gemma-scope-2b-pt-mlp", "layer_3/width_1m/average_l0_9", ("layers.3.mlp", "")),
    ("google/gemma-scope-2b-pt-transcoders", "layer_3/width_16k/average_l0_54",
     ("layers.3.mlp", "layers.3.mlp_in")),
    ("fnlp/Llama3_1-8B-Base-LXR-8x", "Llama3_1-8B-Base-L15R-8x", ("layers.15", "")),
    ("fnlp/Llama3_1-8B-Base-LXA-32x", "Llama3_1-8B-Base-L0A-32x", ("layers.0.attn", "")),
    ("fnlp/Llama3_1-8B-Base-LXM-8x", "Llama3_1-8B-Base-L31M-8x", ("layers.31.mlp", "")),
    ("fnlp/Llama-Scope-R1-Distill", "800M-Slimpajama-0-OpenR1-Math-220k/L7R", ("layers.7", "")),
    ("Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50", "layer27.sae.pt", ("layers.27", "")),
    ("Qwen/SAE-Res-Qwen3.5-27B-W80K-L0_100", "layer0.sae.pt", ("layers.0", "")),
    # Attention SAEs read o_proj's input (TransformerLens attn.hook_z): layers.N.attn_z.
    ("google/gemma-scope-2-270m-pt", "attn_out/layer_5_width_16k_l0_small",
     ("layers.5.attn_z", "")),
    ("google/gemma-scope-2-1b-pt", "attn_out_all/layer_5_width_262k_l0_big",
     ("layers.5.attn_z", "")),
    ("google/gemma-scope-2b-pt-att", "layer_5/width_16k/average_l0_20", ("layers.5.attn_z", "")),
    ("google/gemma-scope-2b-pt-res", "layer_20/width_16k/canonical", ("layers.20", "")),
]


@pytest.mark.parametrize(("repo", "path", "expected"), CASES, ids=lambda c: str(c)[:48])
def test_suite_names_map_onto_hookpoints(repo, path, expected):
    assert suite_hook(repo, path) == SuiteHook(*expected)


@pytest.mark.parametrize(("repo", "path", "reason"), [
    ("google/gemma-scope-2b-pt-res", "embedding/width_4k/average_l0_6", "token embeddings"),
    ("google/gemma-scope-2-270m-pt", "clt/layer_5_width_16k_l0_small", "cross-layer"),
    ("google/gemma-scope-2-270m-pt", "params.safetensors", "no Gemma Scope 2 folder"),
    ("google/gemma-scope-2b-pt-res", "layer_x/width_16k/average_l0_6", "no Gemma Scope SAE"),
    ("fnlp/Llama3_1-8B-Base-LXR-8x", "Llama3_1-8B-Base-L15X-8x", "no Llama Scope SAE"),
    ("Qwen/SAE-Res-Qwen3-8B-Base-W64K-L0_50", "layer.sae.pt", "no Qwen Scope SAE"),
    ("Goodfire/Llama-3.1-8B-Instruct-SAE-l19", "Llama-3.1-8B-Instruct-SAE-l19.pth", "none of"),
])
def test_what_has_no_hookpoint_is_refused_with_the_reason(repo, path, reason):
    with pytest.raises(HubError, match=reason):
        suite_hook(repo, path)


def test_hf_module_names():
    assert hf_hookpoint("model.layers.5.output") == "layers.5"
    assert hf_hookpoint("model.layers.5") == "layers.5"  # Qwen Scope's hf_hook_name
    assert hf_hookpoint("model.layers.5.post_feedforward_layernorm.output") == "layers.5.mlp"
    assert hf_hookpoint("model.layers.5.pre_feedforward_layernorm.output") == "layers.5.mlp_in"
    assert hf_hookpoint("layers.5.mlp.input") == "layers.5.mlp_in"
    assert hf_hookpoint("layers.5.self_attn") == "layers.5.attn"
    assert hf_hookpoint("model.layers.5.self_attn.o_proj.input") == "layers.5.attn_z"
    assert hf_hookpoint("model.layers.5.pre_feedforward_layernorm.input") == "layers.5.resid_mid"
    for bad in ("model.layers.5.input_layernorm.output", "model.norm.output", "blocks.5", ""):
        with pytest.raises(HubError, match="has no hookpoint here"):
            hf_hookpoint(bad)


def test_gemma_scope_2_hf_names_are_the_modules_we_hook():
    """Gemma Scope 2 records `hf_hook_point_in` as HF module outputs; on a gemma3 model, our
    hookpoint for each name hooks that very module (the MLP input: the module whose input is
    the pre-MLP norm's output)."""
    lm = family_lm("gemma3")
    for name in ("model.layers.1.output", "model.layers.1.post_feedforward_layernorm.output"):
        module = lm.model.get_submodule(name.removesuffix(".output"))
        assert lm.module_for(hf_hookpoint(name)) is module
    assert lm.module_for(hf_hookpoint("model.layers.1.pre_feedforward_layernorm.output")) \
        is lm.model.model.layers[1].mlp


@pytest.mark.parametrize(("hook", "hook_out", "expected"), [
    ("blocks.4.hook_mlp_in", "blocks.4.hook_mlp_out", ("layers.4.mlp", "layers.4.mlp_in")),
    ("blocks.4.mlp.hook_in", "blocks.4.hook_mlp_out", ("layers.4.mlp", "layers.4.mlp_in")),
    ("blocks.4.ln2.hook_normalized", "blocks.4.hook_mlp_out", ("layers.4.mlp", "layers.4.mlp_in")),
    ("blocks.4.attn.hook_z", "", ("layers.4.attn_z", "")),
    ("blocks.4.hook_resid_mid", "", ("layers.4.resid_mid", "")),
    ("blocks.4.hook_resid_pre", "", ("layers.3", "")),
    ("layers.4.self_attn", "", ("layers.4.attn", "")),
])
def test_transformer_lens_hooks_and_transcoder_pairs(hook, hook_out, expected):
    """The release table's hooks (and a transcoder's hook_out) map onto our sites: the three
    names the transcoder suites give the MLP's input all read layers.N.mlp_in."""
    assert hook_of(hook, hook_out) == SuiteHook(*expected)


@pytest.mark.parametrize(("hook", "hook_out", "reason"), [
    ("blocks.4.hook_resid_mid", "blocks.4.hook_mlp_out", "transcoder from"),  # a CLT's input
    ("blocks.4.hook_mlp_in", "blocks.5.hook_mlp_out", "transcoder from"),
    ("blocks.0.hook_resid_pre", "", "token embeddings"),
    ("hook_embed", "", "token embeddings"),
    ("blocks.4.attn.hook_pattern", "", "no hookpoint here"),
])
def test_hooks_without_a_site_are_refused(hook, hook_out, reason):
    with pytest.raises(HubError, match=reason):
        hook_of(hook, hook_out)


def test_gemma_hf_input_names_are_the_modules_we_hook():
    """o_proj's input and the pre-MLP norm's input are the inputs of the modules our attn_z
    and resid_mid hookpoints hook (forward pre-hooks) on gemma3."""
    lm = family_lm("gemma3")
    for name in ("model.layers.1.self_attn.o_proj.input",
                 "model.layers.1.pre_feedforward_layernorm.input"):
        module = lm.model.get_submodule(name.removesuffix(".input"))
        assert lm.module_for(hf_hookpoint(name)) is module
