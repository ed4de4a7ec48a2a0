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
from weakref import WeakKeyDictionary

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


def through_final_norm(lm: LM, directions_ND: Tensor) -> Tensor:
    """(n, d) the directions as the unembedding reads them: norm(d) - norm(0) (module doc)."""
    norm = final_norm(lm)
    d = directions_ND.float()
    return (norm(d) - norm(torch.zeros_like(d[:1]))).float()


@torch.inference_mode()
def direction_logits(lm: LM, directions_ND: Tensor) -> Tensor:
    """(n, vocab) logit scores of each direction through the final norm and unembedding."""
    w_u = lm.model.get_output_embeddings().weight  # (vocab, d_model)
    return through_final_norm(lm, directions_ND) @ w_u.float().T


def logit_lens(lm: LM, direction_D: Tensor, k: int = 10) -> LogitLens:
    """The k tokens a direction promotes and the k it suppresses most, on the CPU (the
    direction goes to the LM's device for the product)."""
    logits_V = direction_logits(lm, direction_D.reshape(1, -1).to(lm.device))[0].cpu()
    k = min(k, logits_V.numel())
    top = logits_V.topk(k)
    bottom = logits_V.topk(k, largest=False)
    return LogitLens(top.indices, top.values, bottom.indices, bottom.values)


class _VocabStats(NamedTuple):
    mean_D: Tensor  # mean unembedding row
    cov_DD: Tensor  # covariance of the unembedding rows


_vocab_stats: WeakKeyDictionary = WeakKeyDictionary()  # model -> its _VocabStats


def _stats_of(lm: LM) -> _VocabStats:
    """Mean and covariance of the text tokens' unembedding rows (once per model)."""
    key = lm.model
    if key not in _vocab_stats:
        w_VD = lm.model.get_output_embeddings().weight.detach().float()[: len(lm.tokenizer)]
        mean_D = w_VD.mean(0)
        centered = w_VD - mean_D
        _vocab_stats[key] = _VocabStats(mean_D, centered.T @ centered / len(w_VD))
    return _vocab_stats[key]


@torch.inference_mode()
def token_zscores(lm: LM, directions_ND: Tensor, token_ids_C: Tensor) -> Tensor:
    """(n, C) how far each token's logit-lens score stands above the direction's scores over
    the whole vocabulary, in standard deviations. The mean and variance over the vocabulary
    are exact and cheap: mean_v(W_U d) = mean(W_U) . d and var_v(W_U d) = d' Cov(W_U) d, so no
    (n, vocab) matrix is formed (30 layers x 4,608 features x 49,152 tokens would be 27 GB)."""
    normed_ND = through_final_norm(lm, directions_ND.to(lm.device))
    stats = _stats_of(lm)
    w_VD = lm.model.get_output_embeddings().weight.detach()
    w_CD = w_VD[token_ids_C.to(w_VD.device)].float()
    mean_N1 = (normed_ND @ stats.mean_D)[:, None]
    std_N1 = ((normed_ND @ stats.cov_DD) * normed_ND).sum(-1).clamp_min(1e-12).sqrt()[:, None]
    return (normed_ND @ w_CD.T - mean_N1) / std_N1
