"""Tiny random models of every family the SAE suites were made for, built from a config (no
downloads), with the word-level tiny tokenizer; and what the tests need to know of each
family's block to compute its sublayers another way."""

from dataclasses import dataclass

import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma3TextConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    Qwen2Config,
    Qwen3Config,
)

from sae_core.lm import LM, find_layers
from tests.tiny import tiny_tokenizer

N_LAYERS, D = 3, 32
SLIDING = 4
"""Sliding window of the gemma models: shorter than the test sequences, so local and global
attention differ."""
IDS = {"pad_token_id": 0, "eos_token_id": 2, "bos_token_id": 2}
ATTN = {"num_attention_heads": 4, "num_key_value_heads": 2}


@dataclass(frozen=True)
class Family:
    config: object
    pre_mlp_norm: str
    """The block's norm whose output the MLP reads."""
    parallel: bool = False
    """Attention and MLP both read the block's input (gpt-neox's parallel residual)."""


def _families() -> dict[str, Family]:
    vocab = len(tiny_tokenizer())  # every logit is a token the tokenizer can write
    common = {"vocab_size": vocab, "hidden_size": D, "intermediate_size": 64,
              "num_hidden_layers": N_LAYERS, "max_position_embeddings": 128, **IDS}
    gemma = {**common, **ATTN, "head_dim": 8, "sliding_window": SLIDING}
    return {
        "llama": Family(LlamaConfig(**common, **ATTN), "post_attention_layernorm"),
        "gemma2": Family(Gemma2Config(**gemma), "pre_feedforward_layernorm"),
        "gemma3": Family(Gemma3TextConfig(**gemma, layer_types=[
            "sliding_attention", "full_attention", "sliding_attention"]),
            "pre_feedforward_layernorm"),
        "qwen2": Family(Qwen2Config(**common, **ATTN), "post_attention_layernorm"),
        "qwen3": Family(Qwen3Config(**common, **ATTN, head_dim=8), "post_attention_layernorm"),
        "gpt2": Family(GPT2Config(vocab_size=vocab, n_embd=D, n_layer=N_LAYERS, n_head=4,
                                  n_positions=128, **IDS), "ln_2"),
        "gpt_neox": Family(GPTNeoXConfig(**common, num_attention_heads=4),
                           "post_attention_layernorm", parallel=True),
    }


FAMILIES = _families()


def family_lm(name: str, seed: int = 0) -> LM:
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(FAMILIES[name].config).eval().requires_grad_(False)
    return LM(model=model, tokenizer=tiny_tokenizer(), name=f"tiny-{name}",
              layers=find_layers(model))
