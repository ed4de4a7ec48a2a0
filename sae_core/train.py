"""Train SAEs for many hookpoints at once from one LM forward pass per batch.

Each LM batch of token windows is captured once at every hookpoint; each layer's SAE then
takes one optimizer step on that layer's activations. Nothing is dumped to disk except
resumable checkpoints (safetensors + JSON).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor

from .config import SaeConfig, TrainConfig
from .hooks import run_captured
from .lm import LM
from .sae import Sae
from .shuffle import ShuffleBuffer
from .sparse_grad import normalize_decoder, remove_parallel_grad, topk_step_grads

Progress = Callable[[int, int, dict], None]


def keep_mask(acts_BLD: Tensor, median_norm: float, outlier_factor: float) -> Tensor:
    """(B, L) bool: drop position 0 and massive-activation tokens (norm > factor * median)."""
    keep = acts_BLD.float().norm(dim=-1) <= outlier_factor * median_norm
    keep[:, 0] = False
    return keep


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
    x_hat = sae.decode(acts)
    total_var = (x_ND - x_ND.mean(0)).pow(2).sum()
    fvu = (x_hat - x_ND).pow(2).sum() / total_var
    rms = (total_var / x_ND.shape[0]).sqrt()
    l1 = (acts * sae.W_dec.norm(dim=-1)).sum(-1).mean() / rms
    return fvu, coeff * l1


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
            fired, fvu = stats.fired, stats.fvu
        else:
            sae.zero_grad(set_to_none=True)
            warm = min(self.step_no / max(cfg.l1_warmup_frac * self.total_steps, 1), 1.0)
            fvu_t, l1 = l1_loss(sae, x_ND, cfg.l1_coeff * warm)
            (fvu_t + l1).backward()
            with torch.no_grad():
                fired = (F.relu(sae.pre_acts(x_ND)) > 0).any(0)
            fvu = float(fvu_t.detach())
        self.since_fired += x_ND.shape[0]
        self.since_fired[fired] = 0
        self.n_tokens += x_ND.shape[0]
        self.step_no += 1
        remove_parallel_grad(sae)
        self.opt.step()
        normalize_decoder(sae)
        return fvu

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
        return LayerState(SaeTrainer(sae, self.cfg, self.total_steps), median,
                          self._buffer(x.shape[1], seed))

    def _buffer(self, d_in: int, seed: int) -> ShuffleBuffer | None:
        n = self.cfg.shuffle_batches
        return ShuffleBuffer(n * self.cfg.lm_batch_tokens, d_in, seed) if n >= 2 else None

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

    def save_checkpoint(self, folder: Path, batches_done: int) -> None:
        """Everything needed to resume exactly: weights, Adam moments, counters."""
        tensors, layers = {}, {}
        for h, s in self.layers.items():
            for name, p in s.sae.named_parameters():
                tensors[f"{h}/{name}"] = p.detach().contiguous()
                opt_state = s.trainer.opt.state.get(p, {})
                for key in ("exp_avg", "exp_avg_sq", "step"):
                    if key in opt_state:
                        tensors[f"{h}/{name}/{key}"] = opt_state[key].contiguous()
            tensors[f"{h}/since_fired"] = s.trainer.since_fired
            if s.buffer is not None:
                tensors |= {f"{h}/buffer/{k}": v for k, v in s.buffer.state().items()}
            layers[h] = {"median_norm": s.median_norm, "n_tokens": s.trainer.n_tokens,
                         "step_no": s.trainer.step_no, "n_dropped": s.n_dropped,
                         "d_in": s.sae.cfg.d_in}
        meta = {"batches_done": batches_done, "step_no": self.step_no,
                "train_cfg": asdict(self.cfg), "layers": layers}
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps(meta, indent=1))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)  # a crash mid-save leaves the previous checkpoint intact

    def load_checkpoint(self, folder: Path) -> int:
        """Restore a checkpoint; returns the number of LM batches already done."""
        meta = json.loads((folder / "state.json").read_text())
        if meta["train_cfg"] != asdict(self.cfg):
            raise ValueError(f"checkpoint {folder} was made with another training config")
        tensors = load_file(str(folder / "state.safetensors"))
        for h, info in meta["layers"].items():
            sae = Sae(self.sae_config(h, info["d_in"]))
            trainer = SaeTrainer(sae, self.cfg, self.total_steps)
            with torch.no_grad():
                for name, p in sae.named_parameters():
                    p.copy_(tensors[f"{h}/{name}"])
                    if f"{h}/{name}/step" in tensors:
                        trainer.opt.state[p] = {
                            key: tensors[f"{h}/{name}/{key}"].clone()
                            for key in ("exp_avg", "exp_avg_sq", "step")
                        }
            trainer.since_fired = tensors[f"{h}/since_fired"].clone()
            trainer.n_tokens, trainer.step_no = info["n_tokens"], info["step_no"]
            buffer = self._buffer(info["d_in"], 0)
            if buffer is not None:
                buffer.load_state({k: tensors[f"{h}/buffer/{k}"] for k in ("data", "rng")})
            self.layers[h] = LayerState(trainer, info["median_norm"], buffer, info["n_dropped"])
        self.step_no = meta["step_no"]
        return meta["batches_done"]


def train_saes(
    lm: LM, windows_WL: Tensor, hookpoints: list[str], cfg: TrainConfig, *,
    checkpoint_dir: Path | None = None, progress: Progress | None = None,
) -> MultiTrainer:
    """Train one SAE per hookpoint on `windows` (n_windows, seq_len) token ids, one pass
    (or `cfg.max_tokens` of them, drawn at random).

    Resumes from `checkpoint_dir` when it holds a checkpoint of the same config.
    """
    for h in hookpoints:
        lm.module_for(h)  # fail fast on a bad hookpoint
    seq_len = windows_WL.shape[1]
    per_batch = max(cfg.lm_batch_tokens // seq_len, 1)
    order = torch.randperm(len(windows_WL), generator=torch.Generator().manual_seed(cfg.seed))
    n_batches = len(windows_WL) // per_batch
    if cfg.max_tokens is not None:
        n_batches = min(n_batches, math.ceil(cfg.max_tokens / (per_batch * seq_len)))
    if n_batches == 0:
        raise ValueError(
            f"need at least {per_batch} windows of {seq_len} tokens, got {len(windows_WL)}"
        )
    trainer = MultiTrainer(cfg, hookpoints, lm.name, n_batches * steps_per_lm_batch(cfg))
    start = 0
    if checkpoint_dir is not None and (checkpoint_dir / "state.json").exists():
        start = trainer.load_checkpoint(checkpoint_dir)
    for b in range(start, n_batches):
        batch = windows_WL[order[b * per_batch:(b + 1) * per_batch]]
        acts = run_captured(lm, batch, hookpoints, bf16=cfg.bf16)
        stats = trainer.step(acts)
        done = b + 1
        if checkpoint_dir is not None and cfg.checkpoint_every and (
            done % cfg.checkpoint_every == 0 or done == n_batches
        ):
            trainer.save_checkpoint(checkpoint_dir, done)
        if progress is not None:
            progress(done, n_batches, stats)
    trainer.drain()
    return trainer
