"""One sparse autoencoder module: `topk`, `relu` or `jumprelu`, saved in the SAELens layout.

Saved tensors (SAELens names and shapes): W_enc (d_in, d_sae), b_enc (d_sae,),
W_dec (d_sae, d_in), b_dec (d_in,), and for `jumprelu` threshold (d_sae,). A transcoder
(`cfg.hookpoint_in` set; transcoder.py) is the same module reading another site: W_dec
(d_sae, d_out), b_dec (d_out,) and, with a skip connection, W_skip (d_out, d_in); its
`forward` predicts the output site as decode(encode(x)) + x @ W_skip.T. In memory the
encoder is the parameter `W_enc_SD` (d_sae, d_in), one row per latent: the trainer reads and
updates per-latent rows, and a fused Adam step on a transposed view would copy the whole
tensor every step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .atomic import CorruptFile, load_tensors, save_tensors, write_json
from .config import SaeConfig
from .saelens import input_normalization, sae_config_from_saelens, saelens_cfg
from .topk import topk_sorted

WEIGHTS_FILE = "sae_weights.safetensors"
CONFIG_FILE = "cfg.json"


def jump_relu(pre_NS: Tensor, threshold_S: Tensor) -> Tensor:
    """The JumpReLU gate: a pre-activation counts only above its latent's threshold (and
    above 0). `threshold_S` lines up with pre's last dimension (a subset of latents too)."""
    return F.relu(pre_NS) * (pre_NS > threshold_S)


class SaeOutput(NamedTuple):
    x_hat: Tensor
    """Reconstruction, (n, d_in); a transcoder's prediction of its output site, (n, d_out)."""
    acts: Tensor
    """Dense latent activations, (n, d_sae); zero where a latent does not fire."""


class Sae(nn.Module):
    def __init__(self, cfg: SaeConfig, device: torch.device | str | None = None):
        super().__init__()
        self.cfg = cfg
        self.metadata: dict = {}
        """cfg.json's `metadata` when loaded (training statistics such as `median_norm`)."""
        self.W_enc_SD = nn.Parameter(torch.zeros(cfg.d_sae, cfg.d_in, device=device))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, device=device))
        self.W_dec = nn.Parameter(torch.zeros(cfg.d_sae, cfg.width_out, device=device))
        self.b_dec = nn.Parameter(torch.zeros(cfg.width_out, device=device))
        if cfg.architecture == "jumprelu":
            self.threshold = nn.Parameter(torch.zeros(cfg.d_sae, device=device))
        if cfg.skip:
            self.W_skip = nn.Parameter(torch.zeros(cfg.width_out, cfg.d_in, device=device))

    @classmethod
    def init_from_data(cls, cfg: SaeConfig, sample_ND: Tensor, *, seed: int = 0,
                       encoder_scale: float = 1.0) -> Sae:
        """Random unit decoder rows, encoder = encoder_scale * decoder transpose, b_dec at the
        data mean; on the sample's device (the same weights on every device: the random
        rows are drawn on the CPU)."""
        sae = cls(cfg, device=sample_ND.device)
        gen = torch.Generator().manual_seed(seed)
        w_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=gen)  # cpu: same rows everywhere
        w_dec /= w_dec.norm(dim=-1, keepdim=True)
        with torch.no_grad():
            sae.W_dec.copy_(w_dec)
            sae.W_enc_SD.copy_(w_dec * encoder_scale)
            sae.b_dec.copy_(sample_ND.float().mean(0))
        return sae

    @property
    def W_enc(self) -> Tensor:
        """(d_in, d_sae) view of the encoder, as SAELens names it."""
        return self.W_enc_SD.T

    def tensors(self) -> dict[str, Tensor]:
        """The weights under SAELens names, contiguous, for saving."""
        out = {"W_enc": self.W_enc.detach().contiguous(), "b_enc": self.b_enc.detach(),
               "W_dec": self.W_dec.detach(), "b_dec": self.b_dec.detach()}
        if self.cfg.architecture == "jumprelu":
            out["threshold"] = self.threshold.detach()
        if self.cfg.skip:
            out["W_skip"] = self.W_skip.detach()
        return out

    def pre_acts(self, x_ND: Tensor) -> Tensor:
        if not self.cfg.apply_b_dec_to_input:
            return x_ND @ self.W_enc + self.b_enc
        return (x_ND - self.b_dec) @ self.W_enc + self.b_enc

    def encode_topk(self, x_ND: Tensor, k: int | None = None) -> tuple[Tensor, Tensor]:
        """(values, latent indices), each (n, k): the k largest activations; values >= 0.

        For a TopK SAE this is its encoding; for the others, its k strongest latents."""
        pre = self.pre_acts(x_ND)
        if self.cfg.architecture == "jumprelu":
            pre = jump_relu(pre, self.threshold)
        vals, idx = topk_sorted(pre, k or self.cfg.k)  # ties to the lowest latent id
        return vals.clamp_min(0), idx

    def encode(self, x_ND: Tensor) -> Tensor:
        """Dense latent activations (n, d_sae)."""
        if self.cfg.architecture == "relu":
            return F.relu(self.pre_acts(x_ND))
        if self.cfg.architecture == "jumprelu":
            return jump_relu(self.pre_acts(x_ND), self.threshold)
        return self._dense(*self.encode_topk(x_ND))

    def _dense(self, vals_NK: Tensor, idx_NK: Tensor) -> Tensor:
        out = torch.zeros(vals_NK.shape[0], self.cfg.d_sae, dtype=vals_NK.dtype,
                          device=vals_NK.device)
        return out.scatter_(1, idx_NK, vals_NK)

    def decode(self, acts_NS: Tensor) -> Tensor:
        return acts_NS @ self.W_dec + self.b_dec

    def decode_sparse(self, vals_NK: Tensor, idx_NK: Tensor) -> Tensor:
        """Decode from (values, indices) without materialising the dense latents."""
        out = F.embedding_bag(idx_NK, self.W_dec, per_sample_weights=vals_NK, mode="sum")
        return out + self.b_dec

    def skip_out(self, x_ND: Tensor) -> Tensor | float:
        """A skip transcoder's linear term x @ W_skip.T, (n, d_out); 0 without one. Only
        `forward` adds it: `decode` is what the latents write, as SAELens has it."""
        return x_ND @ self.W_skip.T if self.cfg.skip else 0.0

    def forward(self, x_ND: Tensor) -> SaeOutput:
        if self.cfg.architecture != "topk":
            acts = self.encode(x_ND)
            return SaeOutput(x_hat=self.decode(acts) + self.skip_out(x_ND), acts=acts)
        # Decode the k values directly: a dense decode is a second (n, d_sae) x (d_sae, d) matmul.
        vals, idx = self.encode_topk(x_ND)
        x_hat = self.decode_sparse(vals, idx) + self.skip_out(x_ND)
        return SaeOutput(x_hat=x_hat, acts=self._dense(vals, idx))

    def save(self, folder: Path, *, extra_metadata: dict | None = None) -> None:
        """Write cfg.json (saelens.saelens_cfg) + sae_weights.safetensors as SAELens (v6)
        reads them; `metadata` and `extra_metadata` go under cfg.json's metadata."""
        cfg = saelens_cfg(self.cfg)
        cfg["metadata"] |= self.metadata | (extra_metadata or {})  # e.g. the trainer's trained_as
        save_tensors(folder / WEIGHTS_FILE, self.tensors())
        write_json(folder / CONFIG_FILE, cfg, indent=2)

    @classmethod
    def load(cls, folder: Path) -> Sae:
        """Load a folder written by `save` (or another SAELens one: its cfg.json is read by
        saelens.py, the Hub converter's reader too); clear errors for missing or corrupt
        files."""
        cfg_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        if not cfg_path.exists() or not weights_path.exists():
            raise FileNotFoundError(f"{folder} needs {CONFIG_FILE} and {WEIGHTS_FILE}")
        try:
            raw = json.loads(cfg_path.read_text())
            cfg = sae_config_from_saelens(raw)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
            raise CorruptFile(f"bad SAE config {cfg_path}: {err}") from err
        if (norm := input_normalization(raw)) != "none":  # its inputs need a scale it lacks
            raise ValueError(f"{cfg_path}: normalize_activations={norm!r}; load it from the "
                             "Hub (hub/load.py), which folds the input scale in")
        tensors = load_tensors(weights_path)
        sae = cls(cfg)
        expected = {name: tuple(t.shape) for name, t in sae.tensors().items()}
        got = {name: tuple(t.shape) for name, t in tensors.items()}
        if any(got.get(name) != shape for name, shape in expected.items()):
            raise ValueError(f"{weights_path}: tensors {got} do not match config {expected}")
        with torch.no_grad():
            sae.W_enc.copy_(tensors["W_enc"])
            for name in expected.keys() - {"W_enc"}:
                getattr(sae, name).copy_(tensors[name])
        sae.metadata = raw.get("metadata", {})
        return sae

