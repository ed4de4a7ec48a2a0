"""The optimizer steps: one SAE's (`SaeTrainer`), and every layer's on the activations of
one LM batch (`MultiTrainer`, fed by loop.py). Each layer's activations pass its shuffle
buffer; the TopK backward is hand-written (topk_grad.py), ReLU, BatchTopK and Matryoshka
(batch_topk.py) use autograd, dead-latent remedies are in remedies.py. Everything
lives on the activations' device. A step is the math of one batch, asking for the whole
batch's normalisers and sums where it needs them (whole.py); one process answers them from
its rows, and `MultiTrainer` hands them to its data-parallel ranks (ranks.py), which sum
gradients before the same Adam step, so every rank keeps the same SAEs."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..activations import keep_mask
from ..config import SaeConfig, TrainConfig
from ..sae import Sae
from .batch_topk import (
    BATCH_ARCHS,
    batch_topk_step_grads,
    jumprelu_from,
    prefix_sizes,
    update_threshold,
)
from .ranks import SOLO, Ranks
from .remedies import ghost_grad_loss, resample_dead
from .shuffle import ShuffleBuffer
from .topk_grad import StepBuffers, normalize_decoder, remove_parallel_grad, topk_step
from .whole import AnyOf, Count, Step, Sum, SumGrads, Variance, alone


def sae_batches(x_ND: Tensor, batch_tokens: int, n_rows: int | None = None) -> tuple[Tensor, ...]:
    """One LM batch's rows as SAE batches of about `batch_tokens` (near-equal sizes, so no
    tiny last batch). `n_rows`: the whole LM batch's rows when x is a data-parallel rank's
    part of it (len(x) otherwise); then these are its parts of the SAE batches."""
    n_rows = len(x_ND) if n_rows is None else n_rows
    return x_ND.tensor_split(max(round(n_rows / batch_tokens), 1))


def steps_per_lm_batch(cfg: TrainConfig) -> int:
    return max(round(cfg.lm_batch_tokens / cfg.batch_tokens), 1)


def k_at(cfg: TrainConfig, step: int, total_steps: int) -> int:
    """The k schedule: linear from k_start to k over the first k_anneal_frac of steps."""
    if cfg.k_start is None:
        return cfg.k
    frac = min(step / max(cfg.k_anneal_frac * total_steps, 1), 1.0)
    return round(cfg.k_start + frac * (cfg.k - cfg.k_start))


def relu_losses(sae: Sae, x_ND: Tensor, coeff: float, total_var: Tensor,
                n_rows: int) -> tuple[Tensor, Tensor, Tensor]:
    """(FVU, coeff * L1, the reconstruction error x_hat - x (detached)) for a ReLU SAE on a
    batch of `n_rows` rows and total variance `total_var` (x: all of them, or a data-parallel
    rank's part, whose losses add up over ranks); L1 of activations times decoder norms, in
    units of the batch's RMS deviation so one coefficient fits every layer."""
    acts = F.relu(sae.pre_acts(x_ND))
    rms = (total_var / n_rows).sqrt()
    l1 = (acts * sae.W_dec.norm(dim=-1)).sum() / n_rows / rms
    err = sae.decode(acts) - x_ND
    return err.pow(2).sum() / total_var, coeff * l1, err.detach()


def layer_seed(seed: int, hookpoint: str) -> int:
    """One hookpoint's SAE seed (init, shuffle order), whatever trains beside it: seed +
    position gave a second seed's layer the first seed's draws when layers were skipped."""
    return (seed * 1_000_003 + zlib.crc32(hookpoint.encode())) % 2**62

class SaeTrainer:
    """One SAE, its Adam optimizer and dead-latent counter; `step` takes (n, d_in) rows."""

    def __init__(self, sae: Sae, cfg: TrainConfig, total_steps: int,
                 bufs: StepBuffers | None = None):
        self.sae, self.cfg, self.total_steps = sae, cfg, total_steps
        device = sae.W_dec.device
        # The decoder gets a larger step: unit-norm rows move slowly at the encoder's lr
        # (A/B at layer 15: decoder lr x3 took held-out FVU from 0.263 to 0.244).
        decoder = [sae.W_dec, sae.b_dec]
        encoder = [sae.W_enc_SD, sae.b_enc]
        self.opt = torch.optim.Adam(
            [{"params": encoder}, {"params": decoder, "lr": cfg.lr * cfg.decoder_lr_mult}],
            lr=cfg.lr, fused=device.type in ("cpu", "cuda"),
        )
        self.since_fired = torch.zeros(sae.cfg.d_sae, dtype=torch.long, device=device)
        """Training tokens since each latent last fired."""
        self.bufs = bufs or StepBuffers()
        """Step buffers; one set for all the layers of a MultiTrainer (they step in turn)."""
        self.step_no = 0
        self.n_tokens = 0
        self.threshold = float("nan")
        """BatchTopK: running mean of the smallest kept activation (the inference threshold)."""
        self.prefixes = (prefix_sizes(cfg.matryoshka_prefixes, sae.cfg.d_sae)
                         if cfg.architecture == "matryoshka" else None)

    def step(self, x_ND: Tensor) -> float:
        """One optimizer step on the batch x (n, d_in); returns its FVU (before the update)."""
        return alone(self.whole_step(x_ND))

    def whole_step(self, x_ND: Tensor) -> Step[float]:
        """`step` as a step of whole.py: data parallel, `x_ND` is this rank's part of the
        batch (it may be empty) and the ranks answer its requests (MultiTrainer)."""
        cfg, sae = self.cfg, self.sae
        dead = self.since_fired > cfg.dead_tokens
        if cfg.architecture == "topk":
            stats = yield from topk_step(
                sae, x_ND, k_at(cfg, self.step_no, self.total_steps),
                dead=dead, auxk_alpha=cfg.auxk_alpha, bf16=cfg.bf16, bufs=self.bufs,
            )
            fired, batch_fvu = stats.fired, stats.fvu
        elif cfg.architecture == "relu":
            fired, batch_fvu = yield from self._relu_grads(x_ND, dead)
        else:
            stats = batch_topk_step_grads(
                sae, x_ND, k_at(cfg, self.step_no, self.total_steps), sizes=self.prefixes,
                dead=dead, auxk_alpha=cfg.auxk_alpha)
            self.threshold = update_threshold(self.threshold, stats.min_kept)
            fired, batch_fvu = stats.fired, stats.fvu
        n_rows = yield Count(len(x_ND), x_ND.device)
        self.since_fired += n_rows
        self.since_fired[fired] = 0
        self.n_tokens += n_rows
        self.step_no += 1
        yield SumGrads(tuple(sae.parameters()))
        remove_parallel_grad(sae)
        self.opt.step()
        normalize_decoder(sae)
        # never in the last interval: a resampled latent needs steps to learn its feature
        if (cfg.resample_every and self.step_no % cfg.resample_every == 0
                and self.step_no + cfg.resample_every <= self.total_steps):
            self._resample(x_ND)
        return batch_fvu

    def _relu_grads(self, x_ND: Tensor, dead: Tensor) -> Step[tuple[Tensor, float]]:
        """ReLU + L1 gradients (and ghost grads); (latents that fired, batch FVU)."""
        cfg, sae = self.cfg, self.sae
        sae.zero_grad(set_to_none=True)
        warm = min(self.step_no / max(cfg.l1_warmup_frac * self.total_steps, 1), 1.0)
        total_var = yield Variance(x_ND, one_pass=False)
        n_rows = yield Count(len(x_ND), x_ND.device)
        fvu_t, l1, err = relu_losses(sae, x_ND, cfg.l1_coeff * warm, total_var, n_rows)
        loss = fvu_t + l1
        if cfg.ghost_grads:
            loss = loss + ghost_grad_loss(sae, x_ND, err, dead, total_var)
        loss.backward()
        with torch.no_grad():
            fired_here = (F.relu(sae.pre_acts(x_ND)) > 0).any(0)
        fired = yield AnyOf(fired_here)
        return fired, float((yield Sum(fvu_t.detach())))

    @torch.no_grad()
    def _resample(self, x_ND: Tensor) -> None:
        """Resample the dead latents on this batch, with a generator seeded by the step (a
        resumed run draws the same rows); they count as just fired."""
        dead = self.since_fired > self.cfg.dead_tokens
        if not dead.any():
            return
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.step_no)
        resample_dead(self.sae, self.opt, x_ND, self.sae(x_ND).x_hat, dead, gen)
        self.since_fired[dead] = 0

    def final_sae(self) -> Sae:
        """The SAE as saved and read after training: BatchTopK and Matryoshka SAEs become
        `jumprelu` ones with the learned threshold; cfg.json records how it was trained."""
        cfg = self.cfg
        sae = (jumprelu_from(self.sae, self.threshold) if cfg.architecture in BATCH_ARCHS
               else self.sae)
        sae.metadata = sae.metadata | {"trained_as": cfg.architecture} | (
            {"ghost_grads": True} if cfg.ghost_grads else {}) | (
            {"resample_every": cfg.resample_every} if cfg.resample_every else {})
        return sae

    def extra_state(self) -> dict[str, Tensor]:
        """Training state beyond weights, moments and counters, for checkpoints."""
        if self.cfg.architecture not in BATCH_ARCHS:
            return {}
        return {"threshold": torch.tensor(self.threshold, dtype=torch.float64)}  # cpu: saved

    def load_extra_state(self, tensors: dict[str, Tensor]) -> None:
        if "threshold" in tensors:
            self.threshold = float(tensors["threshold"])

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
    """One SAE, optimizer and dead-latent counter per hookpoint this rank trains (`mine`),
    on `device`. The boundary of the ranks: their share of the layers or of each batch's
    rows, and the answers to each step's whole-batch requests (`ranks.run`)."""

    def __init__(self, cfg: TrainConfig, hookpoints: list[str], model_name: str, total_steps: int,
                 *, ranks: Ranks = SOLO, device: torch.device | str = "cpu"):
        self.cfg, self.hookpoints, self.model_name = cfg, hookpoints, model_name
        self.total_steps, self.step_no = total_steps, 0
        self.ranks, self.device = ranks, torch.device(device)
        self.mine = ranks.share(hookpoints)
        self.layers: dict[str, LayerState] = {}
        self.bufs = StepBuffers()  # 38 MB for the default width, not 38 MB per layer

    def sae_config(self, hookpoint: str, d_in: int) -> SaeConfig:
        return SaeConfig(
            # BatchTopK trains as a topk SAE (what reads it meanwhile keeps k per token);
            # final_sae makes it jumprelu.
            d_in=d_in, d_sae=self.cfg.sae_width(d_in),
            architecture="topk" if self.cfg.architecture in BATCH_ARCHS else self.cfg.architecture,
            k=self.cfg.k, hookpoint=hookpoint, model_name=self.model_name,
        )

    def needs_init(self) -> bool:
        return any(h not in self.layers for h in self.mine)

    def init_layers(self, acts: dict[str, Tensor]) -> None:
        """Median norms and SAEs from the whole first LM batch (every data-parallel rank
        sees all of it, so all start alike, as one process would)."""
        for h in self.mine:
            if h not in self.layers:
                self.layers[h] = self._init_layer(h, acts[h])

    def _init_layer(self, hookpoint: str, acts_BLD: Tensor) -> LayerState:
        norms = acts_BLD[:, 1:].float().norm(dim=-1)
        median = float(norms.median())
        x = acts_BLD[keep_mask(acts_BLD, median, self.cfg.outlier_factor)].float()
        seed = layer_seed(self.cfg.seed, hookpoint)
        sae = Sae.init_from_data(self.sae_config(hookpoint, x.shape[1]), x, seed=seed,
                                 encoder_scale=self.cfg.encoder_scale())
        return self.layer_state(sae, median, seed)

    def layer_state(self, sae: Sae, median_norm: float, seed: int) -> LayerState:
        """A fresh optimizer, dead-latent counter and shuffle buffer around `sae` (moved to
        the device); data-parallel ranks shuffle their own rows, in buffers 1/N as large."""
        sae, n = sae.to(self.device), self.cfg.shuffle_batches
        buffer = None
        if n >= 2:
            buffer = ShuffleBuffer(n * self.cfg.lm_batch_tokens // self.ranks.rows_share,
                                   sae.cfg.d_in, self.ranks.own_seed(seed), self.device)
        trainer = SaeTrainer(sae, self.cfg, self.total_steps, bufs=self.bufs)
        return LayerState(trainer, median_norm, buffer)

    def step(self, acts: dict[str, Tensor]) -> dict:
        """SAE steps for every hookpoint on its (batch, seq, d) activations of one LM batch
        (data parallel: this rank's windows of it)."""
        cfg, ranks = self.cfg, self.ranks
        for hookpoint in self.mine:
            acts_BLD, state = acts[hookpoint], self.layers[hookpoint]
            keep = keep_mask(acts_BLD, state.median_norm, cfg.outlier_factor)
            x = acts_BLD[keep].float()
            state.n_dropped += ranks.count(int(keep[:, 1:].numel() - keep[:, 1:].sum()),
                                           x.device)
            if state.buffer is not None:
                x = ranks.together(state.buffer.push(x), x)
            if x is not None:
                n_rows = ranks.count(len(x), x.device)
                for rows in sae_batches(x, cfg.batch_tokens, n_rows):
                    state.last_fvu = ranks.run(state.trainer.whole_step(rows))
        self.step_no += 1
        return {"step": self.step_no, "fvu": {h: s.last_fvu for h, s in self.layers.items()}}

    def drain(self) -> None:
        """Train on what the shuffle buffers still hold (data parallel: as many steps on
        every rank, the emptier ones with fewer rows)."""
        for state in self.layers.values():
            if state.buffer is not None:
                d = state.sae.cfg.d_in
                batches = list(state.buffer.drain(self.cfg.batch_tokens))
                n = self.ranks.most(len(batches), self.device)
                empty = torch.zeros(0, d, device=self.device)
                for x in batches + [empty] * (n - len(batches)):
                    state.last_fvu = self.ranks.run(state.trainer.whole_step(x))

    def saes(self) -> dict[str, Sae]:
        """Every layer's SAE as saved and read after training."""
        return {h: s.trainer.final_sae() for h, s in self.layers.items()}
