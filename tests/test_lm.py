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
