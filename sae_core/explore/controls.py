"""Control "features" for the layer map: directions that fire as often as SAE features do but
were never trained, so a layer's label structure is credited to its SAE only beyond them.

All three read the activations centred on the SAE's own `b_dec` (the point the SAE encodes
from). Centring cannot change which tokens a direction ranks top (it subtracts one constant
per direction), so the raw-neuron and random controls fire exactly as on raw activations; the
whitened control is the one that changes what fires:

- `neuron`: each residual dimension and its negative;
- `random`: random unit directions, uniform on the sphere;
- `whitened`: random unit directions in whitened space (the layer's covariance set to the
  identity), so a few high-variance directions, e.g. tokens of very large norm, cannot
  decide every direction's top tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .consistency import random_directions

CONTROL_KINDS = ("neuron", "random", "whitened")
EIG_FLOOR = 1e-6
"""Covariance eigenvalues below this share of the largest are floored: directions the data
barely uses are not blown up by whitening."""


def whitening(x_ND: Tensor) -> tuple[Tensor, Tensor]:
    """(mean (D,), W (D, D)) float64 with (x - mean) @ W of identity covariance (ZCA)."""
    x = x_ND.double()
    mean_D = x.mean(dim=0)
    xc = x - mean_D
    cov_DD = xc.T @ xc / max(len(x) - 1, 1)
    eig, vec = torch.linalg.eigh(cov_DD)
    eig = eig.clamp(min=float(eig.max()) * EIG_FLOOR)
    return mean_D, (vec / eig.sqrt()) @ vec.T


def control_activations(x_ND: Tensor, centre_D: Tensor, n_dirs: int, seed: int
                        ) -> dict[str, Tensor]:
    """kind -> (N, n_dirs) float32 activations of the control directions (module docstring)."""
    x = x_ND.float() - centre_D.float()
    d = x.shape[1]
    dirs_FD = random_directions(d, n_dirs, seed=seed)
    mean_D, w_DD = whitening(x)
    # z = (x - mean) @ W; z @ dir = x @ (W @ dir) - const: the constant cannot move a top set
    whitened_DF = (w_DD @ dirs_FD.double().T).float()
    return {"neuron": torch.cat([x, -x], dim=1)[:, :n_dirs],
            "random": x @ dirs_FD.T,
            "whitened": (x - mean_D.float()) @ whitened_DF}
