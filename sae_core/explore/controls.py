"""Control "features" for the layer map: directions that were never trained, each firing on
as many tokens as the SAE feature it is paired with, so a layer's label structure is credited
to its SAE only beyond them.

Support matters: a feature that fires 20 times passes a 0.8 consistency bar by chance far
more easily than one that fires 300 times. So every control has the SAE's own support
distribution: the SAE's features are put in a seeded random order and control direction j
fires on its top n_j tokens, n_j the firing count of SAE feature order[j] (`matched_firings`).
The directions, read from the activations centred on the SAE's own `b_dec`:

- `neuron`: each residual dimension and its negative (2 * d_model of them, each paired
  with several SAE features when the SAE is wider: the same direction at several supports);
- `random`: random unit directions, uniform on the sphere;
- `whitened`: random unit directions in whitened space (the layer's covariance set to the
  identity), so a few high-variance directions, e.g. tokens of very large norm, cannot
  decide every direction's top tokens.

Centring cannot change which tokens a direction ranks top (it subtracts one constant per
direction), so the neuron and random controls fire exactly as on raw activations.

A fourth control reads tokens, not directions: `topk_random`, a random dictionary of the
SAE's width read through the same TopK (each token fires its k largest random directions,
k = the SAE's mean L0 on these tokens, the k of a TopK SAE) (`topk_dictionary_firings`).

Firings are (feature, token) pairs, `Firings`: counts per label and per document both read
them (layermap.py).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .consistency import random_directions

DIRECTION_KINDS = ("neuron", "random", "whitened")
CONTROL_KINDS = (*DIRECTION_KINDS, "topk_random")
EIG_FLOOR = 1e-6
"""Covariance eigenvalues below this share of the largest are floored: directions the data
barely uses are not blown up by whitening."""
COLUMNS = 256
"""Control directions ranked at a time ((N, 256) float32: ~43 MB at 42k tokens)."""
ROWS = 4096
"""Tokens read through the random dictionary at a time."""


class Firings(NamedTuple):
    feat_P: Tensor  # (P,) int64 feature (or control direction) of each firing
    tok_P: Tensor  # (P,) int64 token row of each firing


def whitening(x_ND: Tensor) -> tuple[Tensor, Tensor]:
    """(mean (D,), W (D, D)) float64 with (x - mean) @ W of identity covariance (ZCA)."""
    x = x_ND.double()
    mean_D = x.mean(dim=0)
    xc = x - mean_D
    cov_DD = xc.T @ xc / max(len(x) - 1, 1)
    eig, vec = torch.linalg.eigh(cov_DD)
    eig = eig.clamp(min=float(eig.max()) * EIG_FLOOR)
    return mean_D, (vec / eig.sqrt()) @ vec.T


def control_directions(kind: str, x_ND: Tensor, n_dirs: int, seed: int) -> Tensor:
    """(D, n_dirs) float32: the activations `x_ND` (already centred) times these give each
    control direction's activation, up to one constant per direction (module docstring)."""
    d = x_ND.shape[1]
    if kind == "neuron":  # column j: +e_j, then -e_j, cycling
        j = torch.arange(n_dirs)  # cpu: host control directions
        dirs_DF = torch.zeros(d, n_dirs)  # cpu: host control directions
        dirs_DF[j % d, j] = torch.where((j // d) % 2 == 0, 1.0, -1.0)
        return dirs_DF
    dirs_FD = random_directions(d, n_dirs, seed=seed)
    if kind == "random":
        return dirs_FD.T.contiguous()
    if kind == "whitened":
        # z = (x - mean) @ W; z @ dir = x @ (W @ dir) - const: the constant cannot move a top set
        _, w_DD = whitening(x_ND)
        return (w_DD @ dirs_FD.double().T).float()
    raise ValueError(f"kind must be one of {', '.join(DIRECTION_KINDS)}, got {kind!r}")


def matched_supports(support_F: Tensor, n_dirs: int, seed: int) -> Tensor:
    """(n_dirs,) int64: the firing count of the SAE feature each control direction is paired
    with, the SAE's features taken in a seeded random order (cycled if n_dirs > F). With
    n_dirs = F the histogram is the SAE's own."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(support_F), generator=gen)  # cpu: host pairing
    return support_F.long()[order[torch.arange(n_dirs) % len(order)]]  # cpu: host pairing


def top_n_firings(acts_fn, support_J: Tensor, n_tokens: int) -> Firings:
    """Column j's top support_J[j] tokens: `acts_fn(cols)` gives the (N, len(cols))
    activations of those columns. Columns are ranked in groups of similar support, so each
    group asks topk for no more than it needs; ties are cut arbitrarily."""
    if len(support_J) and int(support_J.max()) > n_tokens:
        raise ValueError(f"a support above the {n_tokens} tokens")
    feats, toks = [], []
    order = support_J.argsort()
    for start in range(0, len(order), COLUMNS):
        cols = order[start:start + COLUMNS]
        need_C = support_J[cols]
        m = int(need_C.max())
        if m == 0:
            continue
        top_CM = acts_fn(cols).T.contiguous().topk(m, dim=1, sorted=True).indices
        keep_CM = torch.arange(m)[None, :] < need_C[:, None]  # cpu: host ranks
        feats.append(cols[:, None].expand_as(top_CM)[keep_CM])
        toks.append(top_CM[keep_CM])
    if not feats:
        none = torch.zeros(0, dtype=torch.long)  # cpu: no firings
        return Firings(none, none)
    return Firings(torch.cat(feats), torch.cat(toks))


def matched_firings(kind: str, x_ND: Tensor, centre_D: Tensor, support_F: Tensor, *,
                    seed: int) -> Firings:
    """Control `kind`'s firings, one direction per SAE feature (F of them), each on as many
    tokens as its paired SAE feature (`matched_supports`)."""
    x = x_ND.float() - centre_D.float()
    n_dirs = len(support_F)
    dirs_DF = control_directions(kind, x, n_dirs, seed)
    return top_n_firings(lambda cols: x @ dirs_DF[:, cols], matched_supports(
        support_F, n_dirs, seed), len(x))


def topk_dictionary_firings(x_ND: Tensor, centre_D: Tensor, width: int, k: int, *,
                            seed: int) -> Firings:
    """Every token fires its `k` largest of `width` random unit directions (a random
    dictionary read through TopK): L0 is k on every token."""
    x = x_ND.float() - centre_D.float()
    dirs_DF = random_directions(x.shape[1], width, seed=seed).T.contiguous()
    k = min(k, width)
    idx = [(x[s:s + ROWS] @ dirs_DF).topk(k, dim=1, sorted=False).indices
           for s in range(0, len(x), ROWS)]
    idx_NK = torch.cat(idx) if idx else torch.zeros(0, k, dtype=torch.long)  # cpu: empty
    tok_NK = torch.arange(len(idx_NK))[:, None].expand_as(idx_NK)  # cpu: host rows
    return Firings(idx_NK.reshape(-1), tok_NK.reshape(-1))


def sae_firings(idx_NK: Tensor, valid_NK: Tensor) -> Firings:
    """The SAE's own firings: token n fires idx_NK[n] where valid_NK[n]."""
    tok_NK = torch.arange(len(idx_NK))[:, None].expand_as(idx_NK)  # cpu: host rows
    return Firings(idx_NK[valid_NK].long(), tok_NK[valid_NK])


def control_firings(x_ND: Tensor, centre_D: Tensor, sae: Firings, d_sae: int, *,
                    seed: int) -> dict[str, Firings]:
    """kind -> firings of every control, matched to the SAE's `sae` firings (its supports;
    its mean L0 as the random dictionary's k)."""
    support_F = torch.bincount(sae.feat_P, minlength=d_sae)
    out = {kind: matched_firings(kind, x_ND, centre_D, support_F, seed=seed)
           for kind in DIRECTION_KINDS}
    k = round(len(sae.feat_P) / max(len(x_ND), 1))
    out["topk_random"] = topk_dictionary_firings(x_ND, centre_D, d_sae, k, seed=seed)
    return out
