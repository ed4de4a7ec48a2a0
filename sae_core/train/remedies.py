"""Dead-latent remedies beyond AuxK: ghost grads (ReLU SAEs) and resampling (any SAE).

Ghost grads (Anthropic, Circuits Updates Jan 2024; as SAELens implements them): each dead
latent gets an exp(pre-activation) pass through its decoder row, trained to reconstruct the
residual the live latents left; the ghost output is scaled to half the residual's norm and
its loss per token to that token's reconstruction loss, so dead latents get a gradient as
large as the live ones' whatever their size.

Resampling (Towards Monosemanticity, 2023): dead latents restart on inputs the SAE explains
worst.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..sae import Sae

RESAMPLE_ENCODER_SCALE = 0.2
"""New encoder rows: this times the mean norm of the live latents' rows (Anthropic)."""


def ghost_grad_loss(sae: Sae, x_ND: Tensor, err_ND: Tensor, dead: Tensor,
                    total_var: Tensor) -> Tensor:
    """The ghost loss of the `dead` latents, in FVU units (sum over tokens / total_var), for
    a batch x whose reconstruction error x_hat - x is `err` (a constant here)."""
    idx = dead.nonzero().squeeze(1)
    if not len(idx) or not len(x_ND):
        return x_ND.new_zeros(())
    resid = -err_ND.detach()
    pre = (x_ND - sae.b_dec) @ sae.W_enc_SD[idx].T + sae.b_enc[idx]
    ghost = torch.exp(pre) @ sae.W_dec[idx]
    with torch.no_grad():  # scale factors are constants, as in the original recipe
        norm_scale = resid.norm(dim=-1) / (2 * ghost.norm(dim=-1) + 1e-6)
    ghost_sq = (ghost * norm_scale[:, None] - resid).pow(2).sum(-1)
    with torch.no_grad():
        loss_scale = resid.pow(2).sum(-1) / (ghost_sq + 1e-6)
    return (loss_scale * ghost_sq).sum() / total_var


def resample_inputs(sq_err_N: Tensor, n: int, gen: torch.Generator) -> Tensor:
    """Indices of `n` rows drawn with probability proportional to their squared
    reconstruction error (without replacement while the batch has enough rows)."""
    weights = sq_err_N.double().cpu().clamp_min(0)
    if not float(weights.sum()) > 0:
        weights = torch.ones_like(weights)
    replace = n > int((weights > 0).sum())
    return torch.multinomial(weights, n, replacement=replace, generator=gen)


@torch.no_grad()
def resample_dead(sae: Sae, opt: torch.optim.Optimizer, x_ND: Tensor, x_hat_ND: Tensor,
                  dead: Tensor, gen: torch.Generator) -> int:
    """Re-initialise the `dead` latents on rows of x drawn by squared error: decoder row the
    unit (centred) input, encoder row the same at 0.2 x the live rows' mean norm, b_enc 0,
    and their Adam moments zero. Returns how many were resampled."""
    idx = dead.nonzero().squeeze(1)
    if not len(idx) or not len(x_ND):
        return 0
    rows = resample_inputs((x_ND - x_hat_ND).pow(2).sum(-1), len(idx), gen).to(x_ND.device)
    # The encoder reads x - b_dec, so the direction the SAE misses is relative to b_dec.
    v = x_ND[rows] - sae.b_dec
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    live_norms = sae.W_enc_SD[~dead].norm(dim=-1)
    norm = live_norms.mean() if len(live_norms) else sae.W_enc_SD.norm(dim=-1).mean()
    sae.W_dec[idx] = v
    sae.W_enc_SD[idx] = v * (RESAMPLE_ENCODER_SCALE * norm)
    sae.b_enc[idx] = 0
    for p in (sae.W_dec, sae.W_enc_SD, sae.b_enc):
        state = opt.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key][idx] = 0
    return len(idx)
