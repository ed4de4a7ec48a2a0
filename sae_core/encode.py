"""The one way every view reads SAE features: the feature index, the layer map, the live view,
search and concept scores all encode through `encode_batch`, so they agree on which features
fire on a token and how strongly.

- Precision: one LM forward and the SAE encoders under bf16 autocast (where the CPU runs
  bf16 natively, precision.py), as the SAEs were trained. Measured on the default atlas (30
  layers, 4,096 index tokens, this 2-core CPU shared with other jobs, best of 3): the index
  pass took 15.7 s in bf16 against 21.0 s in fp32 (forward and encoders); against fp32, bf16
  keeps 97.9% of the (token, feature) firings (Jaccard), the same strongest feature on 99.3%
  of tokens, and activations within 0.3% (median; 2.0% at the 99th percentile).
- Tokens: position 0 and massive activations (`activations.keep_mask`) and padding are never
  encoded; all their values are 0.
- Transcoders (transcoder.py) encode the site they read (`cfg.reads`, the MLP input) and
  are keyed, filtered and reported at the site they write (the MLP output): the forward
  captures both (`transcoder.sites`).
- Firing: a latent fires where its activation is > 0. TopK SAEs give their k latents; ReLU
  and JumpReLU SAEs give every firing latent (no cap), in slots padded with zeros to the
  busiest token of the batch.
- Size: a latent writes act * ||W_dec[f]|| into the residual stream. Our TopK SAEs have unit
  decoder rows; SAELens standard and JumpReLU ones do not, so anything that compares
  activations across features or layers multiplies by `decoder_norms` first.
- Device: the LM decides (`lm.device`). SAEs are moved to it when an atlas is opened with a
  model (`layout.fit_to`), so the forward and every SAE encode run there, under bf16
  autocast on that device (`precision.autocast(BF16, device)`). Tensor factories that meet
  device tensors take `device=`; token ids go to the LM's device (`run_captured` moves
  them). What `encode_batch` returns is on the CPU: everything downstream stores or indexes
  it (feature index, layer map, names, probes, the live view), and one copy here keeps that
  bookkeeping device-free. `sparse_encode` and `encode_dense` stay on their input's device.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .activations import keep_mask
from .hooks import run_captured
from .lm import LM
from .precision import autocast
from .sae import Sae
from .transcoder import input_of, sites

BF16 = True
"""The views' one precision (bf16 if native here; see the module docstring)."""


class LayerCodes(NamedTuple):
    """One layer's reading of a batch of token windows."""

    acts_BLD: Tensor
    """Captured activations at the hookpoint, as the forward produced them (a transcoder's
    output site: what it encodes is its input, `transcoder.input_of`)."""
    keep_BL: Tensor
    """bool: tokens encoded (not position 0, not massive, not padding)."""
    vals_BLK: Tensor
    """float32 activations of the firing latents, strongest first; 0 in spare slots and on
    tokens not kept."""
    idx_BLK: Tensor
    """int64 latent ids matching `vals_BLK` (meaningless where the value is 0)."""


def decoder_norms(sae: Sae) -> Tensor:
    """(d_sae,) float32 ||W_dec[f]||: how long a unit activation of f is in the residual;
    on the CPU, like the codes `encode_batch` returns, which it scales."""
    return sae.W_dec.detach().float().norm(dim=-1).cpu()


@torch.inference_mode()
def sparse_encode(sae: Sae, x_ND: Tensor) -> tuple[Tensor, Tensor]:
    """(values float32, latent ids int64), each (N, K): every firing latent of each token,
    strongest first. TopK: K = k; ReLU / JumpReLU: K = most latents firing on one token."""
    x_ND = x_ND.float()
    with autocast(BF16, x_ND.device):
        if sae.cfg.architecture == "topk":
            vals, idx = sae.encode_topk(x_ND, min(sae.cfg.k, sae.cfg.d_sae))
        else:
            dense_NS = sae.encode(x_ND)  # respects a JumpReLU threshold
            width = int((dense_NS > 0).sum(dim=1).max()) if len(dense_NS) else 0
            # Every firing latent, not a top-k choice (no tie rule needed among them); the
            # zero slots' ids are stored in the index as torch.topk fills them.
            vals, idx = dense_NS.topk(max(width, 1), dim=1)
    vals, order = vals.float().sort(dim=1, descending=True, stable=True)
    return vals, idx.gather(1, order)


def dense(vals_NK: Tensor, idx_NK: Tensor, d_sae: int) -> Tensor:
    """(N, d_sae) activations from sparse codes, on their device; zero slots add nothing."""
    out = torch.zeros(vals_NK.shape[0], d_sae, device=vals_NK.device)
    return out.scatter_add_(1, idx_NK, vals_NK)


def encode_dense(sae: Sae, x_ND: Tensor) -> Tensor:
    """(N, d_sae) float32 activations, exactly as the views read them."""
    return dense(*sparse_encode(sae, x_ND), sae.cfg.d_sae)


def pad_cat(parts: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Concatenate (values (n, K_i), ids (n, K_i)) along tokens, zero-padding to the widest K."""
    width = max(v.shape[1] for v, _ in parts)

    def pad(t: Tensor) -> Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]))

    return torch.cat([pad(v) for v, _ in parts]), torch.cat([pad(i) for _, i in parts])


@torch.inference_mode()
def encode_batch(
    lm: LM, saes: dict[str, Sae], ids_BL: Tensor, medians: dict[str, float], *,
    outlier_factor: float, attention_mask: Tensor | None = None,
) -> dict[str, LayerCodes]:
    """One captured forward of `ids_BL` on the LM's device; every SAE (on that device too)
    encodes its layer's kept tokens. The codes come back on the CPU (module doc)."""
    acts = run_captured(lm, ids_BL, sites(saes), bf16=BF16, attention_mask=attention_mask)
    return encode_acts(saes, acts, medians, outlier_factor=outlier_factor,
                       attention_mask=attention_mask)


@torch.inference_mode()
def encode_acts(
    saes: dict[str, Sae], acts: dict[str, Tensor], medians: dict[str, float], *,
    outlier_factor: float, attention_mask: Tensor | None = None,
) -> dict[str, LayerCodes]:
    """`encode_batch` on activations already captured (`run_captured` at `transcoder.sites`),
    for a caller that reads them for something else too (explore/one_pass.py)."""
    out = {}
    for h, sae in saes.items():
        x_BLD = acts[h]
        keep_BL = keep_mask(x_BLD, medians[h], outlier_factor)
        if attention_mask is not None:
            keep_BL &= attention_mask.to(keep_BL.device).bool()
        vals_NK, idx_NK = sparse_encode(sae, input_of(h, sae, acts)[keep_BL])
        shape = (*keep_BL.shape, vals_NK.shape[1])
        vals_BLK = torch.zeros(shape, device=x_BLD.device)
        idx_BLK = torch.zeros(shape, dtype=torch.long, device=x_BLD.device)
        vals_BLK[keep_BL], idx_BLK[keep_BL] = vals_NK, idx_NK
        # One copy back per layer: every reader stores or indexes these (module doc).
        out[h] = LayerCodes(x_BLD.cpu(), keep_BL.cpu(), vals_BLK.cpu(), idx_BLK.cpu())
    return out
