"""What every reader of activations shares: hookpoint names and the massive-activation rule
(typical norms are in norms.py).

Hookpoints name the module whose *output* they read, as EleutherAI sparsify does:
`layers.N` is the residual stream after block N (HF `hidden_states[N + 1]`),
`layers.N.mlp` is block N's MLP output and `layers.N.attn` its attention output (the
"sites" `resid`, `mlp` and `attn`). Three hookpoints name a module's *input* (`INPUT_SITES`,
read by a forward pre-hook): `layers.N.mlp_in`, what block N's MLP reads (after the pre-MLP
norm), which transcoders encode (transcoder.py); `layers.N.attn_z`, what the attention's output
projection (o_proj, c_proj, dense) reads: every head's output, head-major, n_heads x head_dim
wide (TransformerLens `attn.hook_z` flattened); `layers.N.resid_mid`, the residual stream
between attention and MLP (the pre-MLP norm's input).

Massive activations (DESIGN.md): in SmolLM2 position 0 of every window, and a few other
tokens, have residual norms 10-100x the layer's median and carry almost all the variance.
Training, evaluation, the indexes, the live view and steering all skip position 0 and
tokens over `OUTLIER_FACTOR` x the layer's median norm (`keep_mask`).
"""

from __future__ import annotations

import re

from torch import Tensor

HOOKPOINT_RE = re.compile(r"^layers\.(\d+)(?:\.(mlp_in|mlp|attn_z|attn|resid_mid))?$")
INPUT_SITES = ("mlp_in", "attn_z", "resid_mid")
"""Sublayers read at a module's input (hooks.py), not at its output."""
SITES = ("resid", "mlp", "attn")
"""Where in a block an SAE reads: the residual stream after it, its MLP or attention output."""
OUTLIER_FACTOR = 10.0
"""Tokens whose norm exceeds this many times the layer's median are massive activations."""


def parse_hookpoint(hookpoint: str) -> tuple[int, str]:
    """(layer, sublayer) of `layers.N` (sublayer "", falsy: the residual stream),
    `layers.N.mlp` ("mlp"), `layers.N.attn` ("attn"), `layers.N.mlp_in` ("mlp_in", the MLP's
    input), `layers.N.attn_z` ("attn_z", o_proj's input) or `layers.N.resid_mid` ("resid_mid");
    ValueError for anything else."""
    match = HOOKPOINT_RE.match(hookpoint) if isinstance(hookpoint, str) else None
    if not match:
        raise ValueError(f"unknown hookpoint {hookpoint!r}; use 'layers.N', 'layers.N.mlp', "
                         "'layers.N.attn', 'layers.N.mlp_in', 'layers.N.attn_z' or "
                         "'layers.N.resid_mid'")
    return int(match.group(1)), match.group(2) or ""


def hookpoint_name(layer: int, site: str) -> str:
    """`layers.N` for site `resid`, `layers.N.mlp` / `layers.N.attn` for the others."""
    if site not in SITES:
        raise ValueError(f"unknown site {site!r}; use {', '.join(SITES)}")
    return f"layers.{layer}" if site == "resid" else f"layers.{layer}.{site}"


def layer_of(hookpoint: str) -> int:
    return parse_hookpoint(hookpoint)[0]


def layer_name(hookpoint: str) -> str:
    """"12" for `layers.12`, "12 mlp" for `layers.12.mlp`, "12 attn" for `layers.12.attn`,
    "12 mlp in" for `layers.12.mlp_in`, "12 attn z", "12 resid mid"."""
    layer, sub = parse_hookpoint(hookpoint)
    return f"{layer} {sub.replace('_', ' ')}" if sub else str(layer)


def keep_mask(acts_BLD: Tensor, median_norm: float,
              outlier_factor: float = OUTLIER_FACTOR) -> Tensor:
    """(B, L) bool: drop position 0 and massive-activation tokens (norm > factor * median)."""
    keep = acts_BLD.float().norm(dim=-1) <= outlier_factor * median_norm
    keep[:, 0] = False
    return keep
