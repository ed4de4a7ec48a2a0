"""Feature names timing on random sparse firings of the default atlas's shape.

30 layers x 4,608 latents, k 32, ~42k labelled tokens (half held out), a 49,152-token
vocabulary with Zipf-like token frequencies, d_model 576, logit lens included (a one-block
model of SmolLM2's widths with random weights: only the shapes matter for the time).
Half of each token's firings depend on its id, so most features get named.

    python bench/names.py [--layers 30 --threads 2]
"""

from __future__ import annotations

import argparse
import os
import time

import common  # noqa: F401  (puts the repo on sys.path)
import torch
from tokenizers import Tokenizer, models
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from sae_core.config import SaeConfig
from sae_core.explore.firings import LayerFirings
from sae_core.explore.names import compute_names, share_detected
from sae_core.lm import LM, find_layers
from sae_core.sae import Sae

N, K, D_SAE, D, VOCAB = 42_000, 32, 4608, 576, 49_152
TASK_SIZES = {"pos": 19, "dep": 47, "ent": 21, "shape": 5}


def fake_lm() -> LM:
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=D, intermediate_size=64,
                      num_hidden_layers=1, num_attention_heads=9, num_key_value_heads=3)
    model = LlamaForCausalLM(cfg).eval().requires_grad_(False)
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w0"))
    return LM(model=model, tokenizer=PreTrainedTokenizerFast(tokenizer_object=tok),
              name="fake", layers=find_layers(model))


def firings(seed: int) -> LayerFirings:
    gen = torch.Generator().manual_seed(seed)
    ranks = torch.arange(1, VOCAB + 1, dtype=torch.float64)
    tokens = torch.multinomial(1 / ranks, N, replacement=True, generator=gen)
    labels = {t: torch.randint(0, n, (N,), generator=gen) for t, n in TASK_SIZES.items()}
    by_token = (tokens[:, None] * 7 + torch.arange(K // 2)) % D_SAE
    rand = torch.randint(0, D_SAE, (N, K // 2), generator=gen)
    idx = torch.cat([by_token, rand], 1)
    vals = torch.rand(N, K, generator=gen) + 0.1
    return LayerFirings(torch.zeros(N, 1, dtype=torch.bfloat16), labels, idx, vals > 0,
                        D_SAE, vals, tokens, torch.arange(N), torch.arange(N) // 128 % 2 == 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lm = fake_lm()
    hooks = [f"layers.{i}" for i in range(args.layers)]
    saes = {h: Sae(SaeConfig(d_in=D, d_sae=D_SAE, k=K, hookpoint=h)) for h in hooks}
    for sae in saes.values():
        torch.nn.init.normal_(sae.W_dec)
    data = {h: firings(i) for i, h in enumerate(hooks)}
    vocab = {t: [f"{t}{i}" for i in range(n)] for t, n in TASK_SIZES.items()}
    t0, cpu0 = time.perf_counter(), time.process_time()
    names = compute_names(lm, saes, data, vocab)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    named = sum(int((lay["rule"] > 0).sum()) for lay in names.layers.values())
    print(share_detected(names))
    print(f"RESULT names: {args.layers} layers x {D_SAE} features, {N} tokens: "
          f"{seconds:.1f} s on {args.threads} threads ({cpu:.1f} s of CPU time; the machine's "
          f"load average was {os.getloadavg()[0]:.1f}), {named} named")


if __name__ == "__main__":
    main()
