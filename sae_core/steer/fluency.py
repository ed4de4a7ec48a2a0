"""How fluent a continuation is: its perplexity under the unsteered model."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..lm import LM


@torch.inference_mode()
def perplexity(lm: LM, ids_P: Tensor, new: Sequence[int]) -> float:
    """Of the tokens `new` after the prompt `ids_P`, under the model as it is (nan: empty);
    computed on the LM's device."""
    if not len(new):
        return float("nan")
    new_T = torch.tensor(list(new), dtype=torch.long, device=lm.device)
    full = torch.cat([ids_P.to(lm.device), new_T])[None]
    logp = lm.model(full, use_cache=False).logits[0, len(ids_P) - 1:-1].float().log_softmax(-1)
    return math.exp(-float(logp.gather(1, new_T[:, None]).mean()))


def repeated_share(tokens: Sequence[int], n: int = 3) -> float:
    """Share of the text's n-grams that repeat an earlier one: 0 for no loop, near 1 for
    "the the the ...". Perplexity alone rewards loops (a model predicts its own repetition
    well), so loops are counted on their own."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0
