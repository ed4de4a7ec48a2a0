"""Loss and hand-written gradients for one TopK SAE step.

Only the k selected latents of each token get gradient, so the decoder, the weight gradients
and the encoder's backward are sums over (token, latent) pairs (sparse_kernels.py: numba
kernels on the CPU, embedding_bag and a sampled matmul elsewhere), about B*k*d work instead
of B*d_sae*d for dense matmuls. Matches autograd on the same loss
(tests/train/test_topk_grad.py).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..precision import matmul_dtype
from ..sae import Sae
from ..topk import topk_sorted
from .sparse_kernels import decode_and_dots, latent_grads, latent_order, pair_dots
from .whole import AnyOf, Step, Sum, Variance, alone, sq_norm


class StepStats(NamedTuple):
    fvu: float
    """Fraction of variance unexplained on this batch."""
    auxk: float
    """AuxK loss (0 when no latent is dead)."""
    fired: Tensor
    """(d_sae,) bool: latents that fired on this batch."""


class StepBuffers:
    """Tensors a trainer reuses from step to step: the encoder matmul's operands and its
    (n, d_sae) output. A fresh 38 MB output is page-faulted in on every step, and addmm
    first copies the broadcast bias into it: 103 ms for addmm into a fresh tensor vs 57
    for mm into a reused one with the bias as an extra input column (4096 x 576 x 4608
    bf16, 2 busy cores; the same bf16 results on the checked batch)."""

    def __init__(self) -> None:
        self._held: dict[str, Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype,
            device: torch.device) -> tuple[Tensor, bool]:
        """(the first shape[0] rows of a held buffer, whether it is new and zero-filled);
        batches of a few rows more or less share one buffer."""
        t = self._held.get(name)
        if (t is None or t.shape[0] < shape[0] or t.shape[1:] != shape[1:] or t.dtype != dtype
                or t.device != device):
            self._held[name] = t = torch.zeros(shape, dtype=dtype, device=device)
            return t, True
        return t[:shape[0]], False


def _pre_acts(sae: Sae, xc_ND: Tensor, dtype: torch.dtype, bufs: StepBuffers) -> Tensor:
    """(xc @ W_enc + b_enc) in `dtype`, as [xc, 1, 0...] @ [W_enc_SD, b_enc, 0...].T: the
    bias accumulates in the matmul (one rounding, as addmm), K padded to 32 for AMX tiles."""
    (n, d), device = xc_ND.shape, xc_ND.device
    kp = -(-(d + 1) // 32) * 32
    a, fresh = bufs.get("x_aug", (n, kp), dtype, device)
    if fresh:
        a[:, d] = 1  # and zeros after it, as allocated
    a[:, :d].copy_(xc_ND)
    w, _ = bufs.get("w_aug", (sae.cfg.d_sae, kp), dtype, device)
    w[:, :d].copy_(sae.W_enc_SD.detach())
    w[:, d].copy_(sae.b_enc.detach())
    pre, _ = bufs.get("pre", (n, sae.cfg.d_sae), dtype, device)
    return torch.mm(a, w.T, out=pre)


def topk_step(
    sae: Sae, x_ND: Tensor, k: int, *, dead: Tensor | None = None, auxk_alpha: float = 1 / 32,
    bf16: bool = True, bufs: StepBuffers | None = None,
) -> Step[StepStats]:
    """Set .grad of sae's parameters for loss = FVU + auxk_alpha * AuxK on batch x (n, d).

    A step (whole.py): the normalisers, FVU and `fired` are the whole batch's, asked for
    where needed; data parallel, x is this rank's share and its .grad this rank's part of the
    sum (the caller sums them). `bufs`: a trainer's StepBuffers, reused across its steps."""
    W_enc_SD, W_dec = sae.W_enc_SD.detach(), sae.W_dec.detach()
    xc = x_ND - sae.b_dec.detach()
    pre = _pre_acts(sae, xc, matmul_dtype(bf16, x_ND.device), bufs or StepBuffers())
    vals, idx = topk_sorted(pre, k)  # idx ascending: CSR order for pair_dots
    vals = vals.float().clamp_min_(0)

    total_var = yield Variance(xc)  # x's: xc = x - b_dec, shifted
    # err = x_hat - x (x_hat = code @ W_dec + b_dec), grad_out = d fvu / d x_hat and
    # grad_vals = d fvu / d vals[n, j]
    err, grad_out, grad_vals = decode_and_dots(idx, vals, W_dec, xc, 2 / total_var)
    sq_err = sq_norm(err)
    order, counts = latent_order(idx, sae.cfg.d_sae)
    grads = latent_grads(order, counts, vals, grad_vals, grad_out, xc)
    grad_b_dec = grad_out.sum(0) - grads[2] @ W_enc_SD

    fired = yield AnyOf(counts > 0)
    auxk = torch.zeros((), device=x_ND.device)
    if dead is not None and int(dead.sum()):
        resid_var = (yield Variance(err, sq_norm=sq_err)).clamp_min(1e-12)  # of -err: the same
        auxk, a_grads, dead_idx = _auxk(sae, pre, err, xc, dead, auxk_alpha, resid_var)
        for grad, a_grad in zip(grads, a_grads, strict=True):
            grad.index_add_(0, dead_idx, a_grad)
        grad_b_dec -= a_grads[2] @ W_enc_SD.index_select(0, dead_idx)
    for p, grad in zip((sae.W_dec, sae.W_enc_SD, sae.b_enc, sae.b_dec), (*grads, grad_b_dec),
                       strict=True):
        p.grad = grad
    sums = yield Sum(torch.stack([sq_err, auxk]))
    return StepStats(fvu=float(sums[0] / total_var), auxk=float(sums[1]), fired=fired)


def topk_step_grads(sae: Sae, x_ND: Tensor, k: int, **kw) -> StepStats:
    """`topk_step` on one process's batch x (the keywords are topk_step's)."""
    return alone(topk_step(sae, x_ND, k, **kw))


def _auxk(sae: Sae, pre: Tensor, err: Tensor, xc: Tensor, dead: Tensor, alpha: float,
          resid_var: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor], Tensor]:
    """AuxK (Gao et al. 2024): the top min(d_in / 2, n_dead) dead latents of each token learn
    to explain what the live ones missed, -err, a constant target, normalised by the batch's
    `resid_var` (the total variance of err). (its loss, the gradients it adds to the dead
    latents' rows, those rows: dead_idx)."""
    half = xc.shape[1] // 2
    dead_idx = dead.nonzero().squeeze(1)
    n_dead = len(dead_idx)
    scale = min(n_dead / half, 1.0)
    W_dead = sae.W_dec.detach().index_select(0, dead_idx)
    coeff = 2 * alpha * scale / resid_var  # d (alpha * auxk) / d a_err, per unit of a_err
    if n_dead <= half:  # every dead latent is in every token's top: dense and small
        a_vals = pre.index_select(1, dead_idx).float().clamp_min_(0)
        a_err = torch.addmm(err, a_vals, W_dead)  # decode - (-err)
        auxk = scale * sq_norm(a_err) / resid_var
        a_grad_out = a_err.mul_(coeff)
        a_grad_vals = (a_grad_out @ W_dead.T).mul_(a_vals > 0)
        grads = (a_vals.T @ a_grad_out, a_grad_vals.T @ xc, a_grad_vals.sum(0))
        return auxk, grads, dead_idx
    a_vals, j = topk_sorted(pre.index_select(1, dead_idx), half)  # j indexes W_dead's rows
    a_vals = a_vals.float().clamp_min_(0)
    a_err = F.embedding_bag(j, W_dead, per_sample_weights=a_vals, mode="sum").add_(err)
    auxk = scale * sq_norm(a_err) / resid_var
    a_grad_out = a_err.mul_(coeff)
    a_grad_vals = pair_dots(a_grad_out, W_dead, j) * (a_vals > 0)
    order, counts = latent_order(j, n_dead)
    return auxk, latent_grads(order, counts, a_vals, a_grad_vals, a_grad_out, xc), dead_idx


def remove_parallel_grad(sae: Sae) -> None:
    """Keep decoder rows unit-norm: drop the gradient component along each row."""
    W_dec, grad = sae.W_dec.detach(), sae.W_dec.grad
    along_S = torch.linalg.vecdot(grad, W_dec)
    grad.addcmul_(along_S.unsqueeze(1), W_dec, value=-1)


@torch.no_grad()
def normalize_decoder(sae: Sae) -> None:
    sae.W_dec /= sae.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8)
