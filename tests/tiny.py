"""The tiny random Llama and word-level tokenizer the unit tests build from a config (fast,
offline, deterministic); light to import, for test subprocesses too."""

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from sae_core.lm import LM, find_layers

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", ".", ",", "Paris", "is", "big"]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<eos>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>"
    )


def tiny_lm(n_layers: int = 3, d_model: int = 32, seed: int = 0) -> LM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64, hidden_size=d_model, intermediate_size=64, num_hidden_layers=n_layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    )
    model = LlamaForCausalLM(config).eval().requires_grad_(False)
    return LM(model=model, tokenizer=tiny_tokenizer(), name="tiny-llama", layers=find_layers(model))


def write_tiny_corpus(path: Path) -> Path:
    """60 documents of 40 words of the tiny vocabulary, as a .jsonl corpus."""
    lines = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(40)) for i in range(60)]
    path.write_text("\n".join(json.dumps({"text": t}) for t in lines))
    return path
