"""One SAE trained on a matrix of activation rows with the library's `SaeTrainer`, for any
`TrainConfig`, and its scores (recovery.py): the lab's harness for comparing recipes.

`fit_sae` honours the SAE-side fields of the config: architecture, expansion, k, k_start /
k_anneal_frac, lr, decoder_lr_mult, encoder_init_scale, batch_tokens, auxk_alpha,
dead_tokens, l1_coeff, l1_warmup_frac, bf16 (the encoder matmul), and whatever else
`SaeTrainer` reads. The LM-side fields are not read: max_tokens (it takes every row once),
lm_batch_tokens, shuffle_batches (it shuffles all rows), outlier_factor (no massive
activations here), checkpoint_every; nor seed: the `seed` argument seeds the SAE and the
order of the rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import TrainConfig
from ..sae import Sae
from ..train.trainer import MultiTrainer, SaeTrainer, sae_batches
from .recovery import held_out, mmcs, recovered

HOOKPOINT = "synthetic"
"""The hookpoint and model name recorded in the SAE's config."""


@dataclass(frozen=True)
class FitResult:
    sae: Sae
    """The trained SAE as saved and read after training (`SaeTrainer.final_sae`)."""
    seconds: float
    """Wall time of the optimizer steps (not the init)."""
    steps: int
    """Optimizer steps taken: one pass over the rows in batches of cfg.batch_tokens."""


def fit_sae(train_ND: Tensor, cfg: TrainConfig, *, seed: int = 0) -> FitResult:
    """Train one SAE on one pass over `train_ND` (n, d) in shuffled batches of about
    `cfg.batch_tokens` rows, on the rows' device."""
    gen = torch.Generator().manual_seed(seed)
    shuffled_ND = train_ND[torch.randperm(len(train_ND), generator=gen).to(train_ND.device)]
    batches = sae_batches(shuffled_ND.float(), cfg.batch_tokens)
    # The SAE starts as MultiTrainer starts a layer's (its config, the encoder scale rule,
    # b_dec at the data mean), so a recipe that trains well here trains the same there.
    sae_cfg = MultiTrainer(cfg, [HOOKPOINT], HOOKPOINT, len(batches)).sae_config(
        HOOKPOINT, train_ND.shape[1])
    sae = Sae.init_from_data(sae_cfg, shuffled_ND, seed=seed, encoder_scale=cfg.encoder_scale())
    trainer = SaeTrainer(sae, cfg, len(batches))
    t0 = time.perf_counter()
    for x_ND in batches:
        trainer.step(x_ND)
    seconds = time.perf_counter() - t0
    return FitResult(sae=trainer.final_sae(), seconds=seconds, steps=len(batches))


def evaluate_fit(sae: Sae, test_ND: Tensor, true_FD: Tensor | None = None) -> dict:
    """Held-out fvu, l0 and dead (share of latents never firing on `test_ND`); with the true
    dictionary (n_features, d) also mmcs and recovered_09 (share of features matched by a
    decoder row at |cosine| > 0.9)."""
    run = held_out(sae, test_ND)
    out = {"fvu": run.fvu(), "l0": run.l0(), "dead": run.dead_fraction()}
    if true_FD is not None:
        out |= {"mmcs": mmcs(true_FD, sae.W_dec), "recovered_09": recovered(true_FD, sae.W_dec)}
    return out
