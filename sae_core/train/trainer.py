"""The optimizer steps: one SAE's (`SaeTrainer`), and every layer's on the activations of
one LM batch (`MultiTrainer`, fed by loop.py). Each layer's activations pass its shuffle
buffer; the TopK backward is hand-written (topk_grad.py), ReLU uses autograd."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..activations import keep_mask
from ..config import SaeConfig, TrainConfig
from ..metrics import fvu, total_variance
from ..sae import Sae
from .shuffle import ShuffleBuffer
from .topk_grad import normalize_decoder, remove_parallel_grad, topk_step_grads


def sae_batches(x_ND: Tensor, batch_tokens: int) -> tuple[Tensor, ...]:
    """One LM batch's rows as SAE batches of about `batch_tokens` (near-equal sizes, so no
    tiny last batch)."""
    return x_ND.tensor_split(max(round(len(x_ND) / batch_tokens), 1))


def steps_per_lm_batch(cfg: TrainConfig) -> int:
    return max(round(cfg.lm_batch_tokens / cfg.batch_tokens), 1)


def k_at(cfg: TrainConfig, step: int, total_steps: int) -> int:
    """The k schedule: linear from k_start to k over the first k_anneal_frac of steps."""
    if cfg.k_start is None:
        return cfg.k
    frac = min(step / max(cfg.k_anneal_frac * total_steps, 1), 1.0)
    return round(cfg.k_start + frac * (cfg.k - cfg.k_start))


def l1_loss(sae: Sae, x_ND: Tensor, coeff: float) -> tuple[Tensor, Tensor]:
    """(FVU, coeff * L1) for a ReLU SAE; L1 of activations times decoder norms, in units of
    the batch's RMS deviation so one coefficient fits every layer."""
    acts = F.relu(sae.pre_acts(x_ND))
    rms = (total_variance(x_ND) / x_ND.shape[0]).sqrt()
    l1 = (acts * sae.W_dec.norm(dim=-1)).sum(-1).mean() / rms
    return fvu(x_ND, sae.decode(acts)), coeff * l1


class SaeTrainer:
    """One SAE, its Adam optimizer and dead-latent counter; `step` takes (n, d_in) rows."""

    def __init__(self, sae: Sae, cfg: TrainConfig, total_steps: int):
        self.sae, self.cfg, self.total_steps = sae, cfg, total_steps
        # The decoder gets a larger step: unit-norm rows move slowly at the encoder's lr
        # (A/B at layer 15: decoder lr x3 took held-out FVU from 0.263 to 0.244).
        decoder = [sae.W_dec, sae.b_dec]
        encoder = [sae.W_enc_SD, sae.b_enc]
        self.opt = torch.optim.Adam(
            [{"params": encoder}, {"params": decoder, "lr": cfg.lr * cfg.decoder_lr_mult}],
            lr=cfg.lr, fused=True,
        )
        self.since_fired = torch.zeros(sae.cfg.d_sae, dtype=torch.long)
        """Training tokens since each latent last fired."""
        self.step_no = 0
        self.n_tokens = 0

    def step(self, x_ND: Tensor) -> float:
        """One optimizer step; returns the batch FVU (before the update)."""
        cfg, sae = self.cfg, self.sae
        if cfg.architecture == "topk":
            stats = topk_step_grads(
                sae, x_ND, k_at(cfg, self.step_no, self.total_steps),
                dead=self.since_fired > cfg.dead_tokens, auxk_alpha=cfg.auxk_alpha, bf16=cfg.bf16,
            )
            fired, batch_fvu = stats.fired, stats.fvu
        else:
            sae.zero_grad(set_to_none=True)
            warm = min(self.step_no / max(cfg.l1_warmup_frac * self.total_steps, 1), 1.0)
            fvu_t, l1 = l1_loss(sae, x_ND, cfg.l1_coeff * warm)
            (fvu_t + l1).backward()
            with torch.no_grad():
                fired = (F.relu(sae.pre_acts(x_ND)) > 0).any(0)
            batch_fvu = float(fvu_t.detach())
        self.since_fired += x_ND.shape[0]
        self.since_fired[fired] = 0
        self.n_tokens += x_ND.shape[0]
        self.step_no += 1
        remove_parallel_grad(sae)
        self.opt.step()
        normalize_decoder(sae)
        return batch_fvu

    def dead_fraction(self) -> float:
        return float((self.since_fired > self.cfg.dead_tokens).double().mean())


@dataclass
class LayerState:
    trainer: SaeTrainer
    median_norm: float
    """Median activation norm on the first batch (positions >= 1), for the outlier filter."""
    buffer: ShuffleBuffer | None = None
    n_dropped: int = 0
    last_fvu: float = float("nan")

    @property
    def sae(self) -> Sae:
        return self.trainer.sae


class MultiTrainer:
    """One SAE, optimizer and dead-latent counter per hookpoint."""

    def __init__(self, cfg: TrainConfig, hookpoints: list[str], model_name: str, total_steps: int):
        self.cfg, self.hookpoints, self.model_name = cfg, hookpoints, model_name
        self.total_steps, self.step_no = total_steps, 0
        self.layers: dict[str, LayerState] = {}

    def sae_config(self, hookpoint: str, d_in: int) -> SaeConfig:
        return SaeConfig(
            d_in=d_in, d_sae=self.cfg.expansion * d_in, architecture=self.cfg.architecture,
            k=self.cfg.k, hookpoint=hookpoint, model_name=self.model_name,
        )

    def _init_layer(self, hookpoint: str, acts_BLD: Tensor) -> LayerState:
        norms = acts_BLD[:, 1:].float().norm(dim=-1)
        median = float(norms.median())
        x = acts_BLD[keep_mask(acts_BLD, median, self.cfg.outlier_factor)].float()
        seed = self.cfg.seed + self.hookpoints.index(hookpoint)
        sae = Sae.init_from_data(self.sae_config(hookpoint, x.shape[1]), x, seed=seed,
                                 encoder_scale=self.cfg.encoder_scale())
        return self.layer_state(sae, median, seed)

    def layer_state(self, sae: Sae, median_norm: float, seed: int) -> LayerState:
        """A fresh optimizer, dead-latent counter and shuffle buffer around `sae`."""
        n = self.cfg.shuffle_batches
        buffer = ShuffleBuffer(n * self.cfg.lm_batch_tokens, sae.cfg.d_in, seed) if n >= 2 else None
        return LayerState(SaeTrainer(sae, self.cfg, self.total_steps), median_norm, buffer)

    def step(self, acts: dict[str, Tensor]) -> dict:
        """SAE steps for every hookpoint on its (batch, seq, d) activations of one LM batch."""
        cfg = self.cfg
        for hookpoint in self.hookpoints:
            acts_BLD = acts[hookpoint]
            if hookpoint not in self.layers:
                self.layers[hookpoint] = self._init_layer(hookpoint, acts_BLD)
            state = self.layers[hookpoint]
            keep = keep_mask(acts_BLD, state.median_norm, cfg.outlier_factor)
            x = acts_BLD[keep].float()
            state.n_dropped += int(keep[:, 1:].numel() - keep[:, 1:].sum())
            if state.buffer is not None:
                x = state.buffer.push(x)
            if x is not None:
                for rows in sae_batches(x, cfg.batch_tokens):
                    state.last_fvu = state.trainer.step(rows)
        self.step_no += 1
        return {"step": self.step_no, "fvu": {h: s.last_fvu for h, s in self.layers.items()}}

    def drain(self) -> None:
        """Train on what the shuffle buffers still hold."""
        for state in self.layers.values():
            if state.buffer is not None:
                for x in state.buffer.drain(self.cfg.batch_tokens):
                    state.last_fvu = state.trainer.step(x)

    def saes(self) -> dict[str, Sae]:
        return {h: s.sae for h, s in self.layers.items()}
