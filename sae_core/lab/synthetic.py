"""Synthetic activations from a known dictionary: superposition with ground truth.

More features than dimensions, each sample a sparse non-negative combination of them, with
power-law feature frequencies, groups of features that fire together, and dense noise. An
SAE trained on `sample(...)` should find `true_features(...)` again (recovery.py measures
how well). Everything follows from the config's seed: the dictionary, the frequencies and
the groups; the samples from the generator passed in.

How a sample is drawn: a feature in no group fires with probability p_i, independently. A
feature in a group fires when z_i = sqrt(rho) g + sqrt(1 - rho) e_i exceeds the normal
quantile that gives it probability p_i, with g shared by the group and e_i its own (a
Gaussian copula): each p_i stays exact, and members of a group co-fire more often than
independent features would. Firing features get random non-negative magnitudes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..config import TrainConfig

REFERENCE_WIDTH = 8 * 576
"""The default recipe's width on the default model (expansion 8 x SmolLM2's d_model)."""
CHUNK = 8192
"""Rows drawn at once by `sample` (bounds the (rows, n_features) temporaries)."""


@dataclass(frozen=True)
class SyntheticConfig:
    d: int = 64
    """Dimension of the activations (the 'residual stream' width)."""
    n_features: int = 512
    """True features (dictionary rows). Above `d` is superposition: the rows cannot be
    orthogonal, so features interfere and only sparsity makes them separable."""
    mean_active: float = 5.0
    """Expected number of features firing in a sample (the true L0)."""
    freq_exponent: float = 0.5
    """Feature i fires with probability proportional to (i + 1) ** -freq_exponent: a few
    common features and a long tail of rare ones, as in language models. 0: all alike."""
    n_groups: int = 32
    """Groups of features that tend to fire together (e.g. 'code' features, or a token's
    several properties). Members are drawn at random from all features; the rest fire
    independently."""
    group_size: int = 4
    """Features per group."""
    group_correlation: float = 0.5
    """rho in [0, 1): correlation of the latent normals of a group's members; 0 makes them
    independent, near 1 they fire almost only together."""
    magnitude_std: float = 0.5
    """A firing feature's coefficient is |1 + magnitude_std * N(0, 1)|: non-negative, as
    an SAE latent is, and varying, so the SAE must read the amount and not just the
    presence."""
    noise_std: float = 0.05
    """Std of isotropic Gaussian noise added to every coordinate: what the dictionary does not
    explain (about 2% of the variance at the defaults), the floor under any SAE's FVU."""
    seed: int = 0
    """Seeds the dictionary and the groups (frequencies follow the feature index)."""

    def __post_init__(self) -> None:
        if min(self.d, self.n_features) < 1 or self.mean_active <= 0:
            raise ValueError("d, n_features and mean_active must be positive")
        if self.n_groups * self.group_size > self.n_features or min(self.n_groups,
                                                                    self.group_size) < 0:
            raise ValueError(f"{self.n_groups} groups of {self.group_size} need at least "
                             f"{self.n_groups * self.group_size} features, got {self.n_features}")
        if not 0 <= self.group_correlation < 1 or min(self.noise_std, self.magnitude_std) < 0:
            raise ValueError("group_correlation must be in [0, 1), noise and magnitude std >= 0")
        if float(feature_probs(self).max()) > 1:
            raise ValueError(f"mean_active {self.mean_active} with freq_exponent "
                             f"{self.freq_exponent} makes the commonest feature fire with "
                             "probability above 1: lower either")


def true_features(cfg: SyntheticConfig) -> Tensor:
    """The dictionary, (n_features, d): random directions, unit rows (float32, CPU)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    feats_FD = torch.randn(cfg.n_features, cfg.d, generator=gen, dtype=torch.float64)
    return (feats_FD / feats_FD.norm(dim=-1, keepdim=True)).float()


def feature_probs(cfg: SyntheticConfig) -> Tensor:
    """Each feature's firing probability (n_features,), float64, decreasing with its index
    (power law), summing to `mean_active`."""
    ranks_F = torch.arange(1, cfg.n_features + 1, dtype=torch.float64)
    weights_F = ranks_F ** -cfg.freq_exponent
    return cfg.mean_active * weights_F / weights_F.sum()


def groups(cfg: SyntheticConfig) -> Tensor:
    """Each feature's group (n_features,), -1 for a feature in none."""
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    members = torch.randperm(cfg.n_features, generator=gen)[:cfg.n_groups * cfg.group_size]
    group_F = torch.full((cfg.n_features,), -1, dtype=torch.long)
    group_F[members] = torch.arange(len(members)) // max(cfg.group_size, 1)
    return group_F


def sample_codes(cfg: SyntheticConfig, n: int, generator: torch.Generator) -> Tensor:
    """(n, n_features) non-negative coefficients, zero where a feature does not fire."""
    group_F, probs_F = groups(cfg), feature_probs(cfg)
    member = group_F >= 0
    fires_NF = torch.empty(n, cfg.n_features, dtype=torch.bool)
    fires_NF[:, ~member] = torch.rand(n, int((~member).sum()), generator=generator) < probs_F[
        ~member].float()
    rho = cfg.group_correlation
    shared_NG = torch.randn(n, cfg.n_groups, generator=generator)
    z_NM = (rho ** 0.5 * shared_NG[:, group_F[member]]
            + (1 - rho) ** 0.5 * torch.randn(n, int(member.sum()), generator=generator))
    fires_NF[:, member] = z_NM > torch.special.ndtri(1 - probs_F[member]).float()
    codes_NF = torch.zeros(n, cfg.n_features)
    n_fired = int(fires_NF.sum())
    codes_NF[fires_NF] = (1 + cfg.magnitude_std * torch.randn(n_fired, generator=generator)).abs()
    return codes_NF


def activations(cfg: SyntheticConfig, codes_NF: Tensor, generator: torch.Generator,
                features_FD: Tensor | None = None) -> Tensor:
    """(n, d): the codes times the dictionary, plus noise drawn from `generator`."""
    features_FD = true_features(cfg) if features_FD is None else features_FD
    noise_ND = torch.randn(len(codes_NF), cfg.d, generator=generator) * cfg.noise_std
    return codes_NF @ features_FD + noise_ND


def sample(cfg: SyntheticConfig, n: int, generator: torch.Generator | None = None) -> Tensor:
    """(n, d) activations, drawn `CHUNK` rows at a time (float32, CPU); the same rows for
    the same generator state (default: seeded with `cfg.seed + 2`, apart from the
    dictionary's stream)."""
    gen = torch.Generator().manual_seed(cfg.seed + 2) if generator is None else generator
    features_FD = true_features(cfg)
    out_ND = torch.empty(n, cfg.d)
    for start in range(0, n, CHUNK):
        rows = min(CHUNK, n - start)
        out_ND[start:start + rows] = activations(cfg, sample_codes(cfg, rows, gen), gen,
                                                 features_FD)
    return out_ND


def synthetic_recipe(syn: SyntheticConfig, base: TrainConfig | None = None) -> TrainConfig:
    """`base` (default `TrainConfig()`) for the synthetic problem: k scaled to keep its share
    of active latents at this width (32 of 8 x 576 -> 4 of 8 x 64, one below the true L0)."""
    base = base or TrainConfig()
    return replace(base, k=max(1, round(base.k * base.sae_width(syn.d) / REFERENCE_WIDTH)))
