"""Logit lens of a direction in the residual stream: which output tokens it promotes.

A feature's decoder row d goes through the model's final norm and unembedding:
logits(d) = W_U (norm(d) - norm(0)). The norm is applied to the direction alone. For an
RMSNorm that is d * gain / rms(d): the 1/rms(d) factor is one positive number, so the
ranking of tokens equals that of W_U (gain * d), i.e. the norm's gain folded into the
unembedding (as TransformerLens does). The alternative, normalising x + d for some
typical residual x, would mix in what x itself predicts and depend on the choice of x.
Subtracting norm(0) removes a LayerNorm's bias (zero for an RMSNorm), which is the same
for every direction and says nothing about this one. Scores are comparable within one
direction, not across models.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..lm import LM

_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "final_norm")


class LogitLens(NamedTuple):
    top_ids: Tensor  # (k,) token ids the direction promotes most, strongest first
    top_vals: Tensor  # (k,) their logit scores
    bottom_ids: Tensor  # (k,) token ids it suppresses most, strongest first
    bottom_vals: Tensor  # (k,) their (negative) scores


def final_norm(lm: LM) -> nn.Module:
    """The norm applied after the last block (llama `norm`, gpt2 `ln_f`, ...), or identity."""
    base = lm.model.base_model
    for name in _NORM_NAMES:
        module = getattr(base, name, None)
        if isinstance(module, nn.Module):
            return module
    return nn.Identity()


@torch.inference_mode()
def direction_logits(lm: LM, directions_ND: Tensor) -> Tensor:
    """(n, vocab) logit scores of each direction through the final norm and unembedding."""
    norm = final_norm(lm)
    d = directions_ND.float()
    normed = norm(d) - norm(torch.zeros_like(d[:1]))
    w_u = lm.model.get_output_embeddings().weight  # (vocab, d_model)
    return normed.float() @ w_u.float().T


def logit_lens(lm: LM, direction_D: Tensor, k: int = 10) -> LogitLens:
    """The k tokens a direction promotes and the k it suppresses most."""
    logits_V = direction_logits(lm, direction_D.reshape(1, -1))[0]
    k = min(k, logits_V.numel())
    top = logits_V.topk(k)
    bottom = logits_V.topk(k, largest=False)
    return LogitLens(top.indices, top.values, bottom.indices, bottom.values)
