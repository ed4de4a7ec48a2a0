"""BatchTopK and Matryoshka SAE steps, with autograd.

BatchTopK (Bussmann et al. 2024) keeps the k x n largest ReLU pre-activations of a batch of n
tokens, so a token may use more or fewer than k latents. At inference there is no batch: a
latent fires above a threshold, the running mean of the smallest kept activation per batch
(as SAELens and dictionary_learning estimate it), so the SAE is saved as `jumprelu`.
Matryoshka (Bussmann et al. 2025) trains the same selection on the mean FVU of the
reconstructions from nested prefixes of the latents.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..metrics import total_variance
from ..sae import Sae

BATCH_ARCHS = ("batchtopk", "matryoshka")
THRESHOLD_RATE = 0.01
"""Weight of each batch's smallest kept activation in the threshold's running mean (SAELens's
`topk_threshold_lr`): about the last 100 batches, so the early, larger values fade."""


class BatchStats(NamedTuple):
    fvu: float
    """FVU of the full reconstruction on this batch."""
    fired: Tensor
    """(d_sae,) bool: latents kept for some token of this batch."""
    min_kept: float
    """Smallest positive kept activation (NaN when none is positive)."""


def prefix_sizes(fractions: tuple[float, ...], d_sae: int) -> list[int]:
    """Latent counts of the nested prefixes: increasing, at least 1, the last d_sae."""
    sizes: list[int] = []
    for f in fractions:
        sizes.append(min(max(round(f * d_sae), sizes[-1] + 1 if sizes else 1), d_sae))
    return sorted(set(sizes))


def batch_topk(pre_NS: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(dense activations (n, d_sae), kept values): the k x n largest ReLU pre-activations
    of the whole batch, zero elsewhere; differentiable in the kept values."""
    n, d_sae = pre_NS.shape
    flat = F.relu(pre_NS).reshape(-1)
    vals, idx = flat.topk(min(k * n, flat.numel()), sorted=False)
    return torch.zeros_like(flat).scatter(0, idx, vals).view(n, d_sae), vals


def prefix_fvus(acts_NS: Tensor, W_dec: Tensor, b_dec: Tensor, x_ND: Tensor,
                total_var: Tensor, sizes: list[int]) -> Tensor:
    """(len(sizes),) FVU of the reconstruction from the first m latents, for each m in
    `sizes`; each prefix adds its slice to the previous one's reconstruction."""
    x_hat, start, out = b_dec.expand_as(x_ND), 0, []
    for m in sizes:
        x_hat = x_hat + acts_NS[:, start:m] @ W_dec[start:m]
        out.append((x_ND - x_hat).pow(2).sum() / total_var)
        start = m
    return torch.stack(out)


def auxk_loss(pre_NS: Tensor, resid_ND: Tensor, W_dec: Tensor, dead: Tensor) -> Tensor:
    """AuxK (Gao et al. 2024), as topk_grad.py computes it: the top d_in/2 dead latents of
    each token learn to explain the residual `resid` (a constant target), scaled down when
    fewer latents are dead."""
    n_dead, half = int(dead.sum()), resid_ND.shape[1] // 2
    if not n_dead or not half:
        return pre_NS.new_zeros(())
    dead_idx = dead.nonzero().squeeze(1)
    vals, j = pre_NS.index_select(1, dead_idx).topk(min(half, n_dead), dim=-1, sorted=False)
    a_hat = F.embedding_bag(dead_idx[j], W_dec, per_sample_weights=F.relu(vals), mode="sum")
    scale = min(n_dead / half, 1.0)
    return scale * (a_hat - resid_ND).pow(2).sum() / total_variance(resid_ND).clamp_min(1e-12)


def batch_topk_step_grads(sae: Sae, x_ND: Tensor, k: int, *, sizes: list[int] | None,
                          dead: Tensor | None = None, auxk_alpha: float = 1 / 32) -> BatchStats:
    """Set .grad of sae's parameters for FVU (or, with prefix `sizes`, the mean prefix FVU)
    + auxk_alpha * AuxK on batch x (n, d); fp32 autograd."""
    sae.zero_grad(set_to_none=True)
    x = x_ND.float()
    pre = sae.pre_acts(x)
    acts, kept = batch_topk(pre, k)
    total_var = total_variance(x).clamp_min(1e-12)
    fvus = prefix_fvus(acts, sae.W_dec, sae.b_dec, x, total_var,
                       sizes or [sae.cfg.d_sae])
    loss = fvus.mean()
    if dead is not None and dead.any():
        with torch.no_grad():
            resid = x - sae.decode(acts)
        loss = loss + auxk_alpha * auxk_loss(pre, resid, sae.W_dec, dead)
    loss.backward()
    kept = kept.detach()
    positive = kept[kept > 0]
    min_kept = float(positive.min()) if len(positive) else float("nan")
    return BatchStats(fvu=float(fvus[-1].detach()), fired=(acts > 0).any(0), min_kept=min_kept)


def update_threshold(estimate: float, min_kept: float) -> float:
    """The running mean after one batch (the first batch's value starts it)."""
    if min_kept != min_kept:  # NaN: nothing kept this batch
        return estimate
    if estimate != estimate:
        return min_kept
    return (1 - THRESHOLD_RATE) * estimate + THRESHOLD_RATE * min_kept


def jumprelu_from(sae: Sae, threshold: float) -> Sae:
    """A `jumprelu` copy of a BatchTopK SAE: same weights, `threshold` for every latent."""
    out = Sae(replace(sae.cfg, architecture="jumprelu"), device=sae.W_dec.device)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            getattr(out, name).copy_(p)
        out.threshold.fill_(0.0 if threshold != threshold else threshold)
    return out
