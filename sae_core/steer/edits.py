"""Steering: edit the residual stream along SAE features while the model writes
(generation.py runs the edited generation; typical norms come from activations.py).

Two modes, both at the feature's layer (`layers.N`, the output of block N):
- `add`: x -> x + s * n * d_f, with d_f the feature's unit decoder row and n the layer's
  typical residual norm (median over corpus tokens), so one strength scale fits every layer;
- `clamp`: x -> x + (s * n / |W_dec[f]| - a_f(x)) * W_dec[f], with a_f(x) the feature's
  current SAE activation (TopK: its value if it is among the top k, else 0): the feature then
  writes s * n along its direction, whatever its decoder row's norm (SAELens standard and
  JumpReLU SAEs do not have unit rows). The SAE's reconstruction error stays in place, so
  the edit changes that feature's contribution and nothing else.

A transcoder's feature (transcoder.py) steers where its decoder writes: its hookpoint
`layers.N.mlp`, the MLP output; its current activation (`clamp`) is read from the MLP input
the same forward passed to the MLP, captured just before.

The hooks edit only the batch rows that carry a steering. Tokens the SAEs never trained on
(position 0, norm above outlier_factor x the typical norm) are never edited: their reading
by the SAE means nothing and steering there does nothing useful (DESIGN.md). Hooks act only
in the calling thread and are removed in `finally`. The edit's tensors live on the SAE's
device (the LM's, layout.fit_to) and follow the activation to its device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..activations import OUTLIER_FACTOR, layer_of, parse_hookpoint
from ..errors import BadInput, check_number, check_whole
from ..hooks import capture, edit_output
from ..lm import LM
from ..sae import Sae, jump_relu
from ..topk import topk_sorted

MAX_STRENGTH = 20.0
"""Largest |strength| accepted, in multiples of the layer's typical residual norm."""
MAX_FEATURES = 8
Mode = Literal["add", "clamp"]
Positions = Literal["all", "generated"]


def check_strength(strength: float) -> None:
    """The library's check of a steering strength (every steer checks it when made)."""
    check_number(strength, "strength", -MAX_STRENGTH, MAX_STRENGTH)


def _check_hookpoint(hookpoint: object) -> None:
    if not isinstance(hookpoint, str):
        raise BadInput("hookpoint", f"hookpoint must be text like 'layers.5', got "
                                    f"{type(hookpoint).__name__}")
    parse_hookpoint(hookpoint)


@dataclass(frozen=True)
class FeatureSteer:
    hookpoint: str
    """Where the feature's SAE reads: `layers.N` (residual after block N), `layers.N.mlp` or
    `layers.N.attn` (the MLP or attention output)."""
    feature: int
    """Latent index in that layer's SAE."""
    strength: float
    """In multiples of the layer's typical residual norm. add: length of the added vector;
    clamp: the value the feature's activation is set to."""
    mode: Mode = "add"

    def __post_init__(self) -> None:
        check_strength(self.strength)
        if self.mode not in ("add", "clamp"):
            raise BadInput("mode", f"mode must be 'add' or 'clamp', got {self.mode!r:.40}")
        _check_hookpoint(self.hookpoint)
        check_whole(self.feature, "feature", 0)  # feature numbers start at 0

    @property
    def layer(self) -> int:
        return layer_of(self.hookpoint)


@dataclass(frozen=True, eq=False)
class DirectionSteer:
    """Add a direction that is no SAE feature (a difference of means, a probe): x -> x + s *
    n * v / |v| at `hookpoint`, with n the layer's typical residual norm as for features."""

    hookpoint: str
    direction: Tensor
    """(d_in,) any nonzero vector; only its direction counts."""
    strength: float
    mode: Mode = "add"

    def __post_init__(self) -> None:
        check_strength(self.strength)
        _check_hookpoint(self.hookpoint)
        if self.mode != "add":
            raise BadInput("mode", "a direction can only be added")
        if not isinstance(self.direction, Tensor):
            raise BadInput("direction", "a steering direction must be a tensor")
        if self.direction.ndim != 1 or not bool(torch.isfinite(self.direction).all()) \
                or not bool(self.direction.any()):
            raise ValueError("a steering direction must be one finite, nonzero vector")

    @property
    def layer(self) -> int:
        return layer_of(self.hookpoint)


Steer = FeatureSteer | DirectionSteer


@dataclass(frozen=True)
class Steering:
    features: tuple[Steer, ...]
    positions: Positions = "all"
    """`all`: every prompt and generated position; `generated`: only positions that predict
    a new token (the last prompt position onwards), the prompt itself is read unsteered."""

    def __post_init__(self) -> None:
        if not isinstance(self.features, tuple | list) or not all(
                isinstance(f, FeatureSteer | DirectionSteer) for f in self.features):
            raise BadInput("features", "a steering is a tuple of FeatureSteer or "
                                       "DirectionSteer")
        if not self.features:
            raise BadInput("features", "pick at least one feature to steer with")
        if len(self.features) > MAX_FEATURES:
            raise BadInput("features", f"at most {MAX_FEATURES} features at once, got "
                                       f"{len(self.features)}")
        if self.positions not in ("all", "generated"):
            raise BadInput("positions", f"positions must be 'all' or 'generated', got "
                                        f"{self.positions!r:.40}")


def hookpoint_for_layer(saes: dict[str, Sae], layer: int) -> str:
    """The atlas's hookpoint at layer N (`layers.N`, else `layers.N.mlp`, else
    `layers.N.attn`); clear error if none."""
    layers = sorted({layer_of(h) for h in saes})
    layer = check_whole(layer, "layer", 0, 10**6)
    for h in (f"layers.{layer}", f"layers.{layer}.mlp", f"layers.{layer}.attn"):
        if h in saes:
            return h
    raise BadInput("layer", f"layer {layer} is not in this SAE set (layers: "
                            f"{', '.join(map(str, layers))})")


def check_steering(steering: Steering, saes: dict[str, Sae]) -> None:
    """Clear errors (BadInput) for layers outside the atlas and features outside the SAE."""
    if not isinstance(steering, Steering):
        raise BadInput("steering", f"steering must be a Steering, got "
                                   f"{type(steering).__name__}")
    for f in steering.features:
        if f.hookpoint not in saes:
            hookpoint_for_layer(saes, f.layer)  # names the layers there are
            raise BadInput("layer", f"this SAE set has no SAE at {f.hookpoint}")
        if isinstance(f, DirectionSteer):
            if f.direction.numel() != saes[f.hookpoint].cfg.d_in:
                raise BadInput("direction", f"the direction has {f.direction.numel()} "
                                            f"numbers; layer {f.layer} has "
                                            f"{saes[f.hookpoint].cfg.d_in}")
            continue
        d_sae = saes[f.hookpoint].cfg.d_sae
        if f.feature >= d_sae:
            raise BadInput("feature", f"feature {f.feature} does not exist at layer "
                                      f"{f.layer}: features are numbered 0..{d_sae - 1}")


def feature_acts(sae: Sae, x_ND: Tensor, feats_C: Tensor) -> Tensor:
    """(N, C) current SAE activation of latents `feats_C`: TopK: the value if the latent is
    among the top k (and positive), else 0, chosen by the one top-k rule the training step
    and the views use (topk.topk_sorted: ties at the k-th value go to the lowest ids);
    ReLU / JumpReLU: as `Sae.encode`."""
    pre_NS = sae.pre_acts(x_ND.float())
    pre_NC = pre_NS[:, feats_C]
    if sae.cfg.architecture == "relu":
        return pre_NC.clamp_min(0)
    if sae.cfg.architecture == "jumprelu":
        return jump_relu(pre_NC, sae.threshold[feats_C])
    _, idx_NK = topk_sorted(pre_NS, sae.cfg.k)
    chosen_NC = (idx_NK[:, :, None] == feats_C.to(idx_NK.device)[None, None, :]).any(dim=1)
    return torch.where(chosen_NC, pre_NC, 0.0).clamp_min(0)


@dataclass
class _Cursor:
    offset: int = 0
    """Tokens already in the KV cache when the current forward starts."""


def _layer_edit(sae: Sae, norm: float, rows: Sequence[Steering | None], hookpoint: str,
                prompt_len: int, cursor: _Cursor, outlier_factor: float,
                inputs: dict[str, Tensor] | None = None) -> Callable:
    """The output edit of one layer for a batch whose row b carries `rows[b]`; `inputs`
    holds a transcoder's input in the current forward (`steering_hooks` captures it)."""
    B, d = len(rows), sae.cfg.width_out
    w_dec = sae.W_dec.detach().float()
    dev = w_dec.device
    add_BD = torch.zeros(B, d, device=dev)
    clamp_ids = sorted({f.feature for r in rows if r for f in r.features
                        if f.hookpoint == hookpoint and f.mode == "clamp"})
    value_BC = torch.zeros(B, len(clamp_ids), device=dev)
    on_BC = torch.zeros(B, len(clamp_ids), device=dev)
    start_B = torch.zeros(B, dtype=torch.long, device=dev)
    for b, row in enumerate(rows):
        if row is None:
            continue
        start_B[b] = max(prompt_len - 1, 1) if row.positions == "generated" else 1
        for f in row.features:
            if f.hookpoint != hookpoint:
                continue
            if isinstance(f, DirectionSteer):
                v_D = f.direction.float().to(dev)
                add_BD[b] += f.strength * norm * v_D / v_D.norm()
            elif f.mode == "add":
                add_BD[b] += f.strength * norm * w_dec[f.feature] / w_dec[f.feature].norm()
            else:
                c = clamp_ids.index(f.feature)
                row_norm = w_dec[f.feature].norm()
                value_BC[b, c], on_BC[b, c] = f.strength * norm / row_norm, 1.0
    feats_C = torch.tensor(clamp_ids, dtype=torch.long, device=dev)
    dirs_CD = w_dec[feats_C]

    def edit(x_BLD: Tensor) -> Tensor:
        L, x_on = x_BLD.shape[1], x_BLD.to(dev)  # a no-op where the SAE sits with the LM
        pos_L = cursor.offset + torch.arange(L, device=dev)
        ok_BL = (pos_L >= start_B[:, None]) & (x_on.norm(dim=-1) <= outlier_factor * norm)
        delta_BLD = add_BD[:, None, :].expand(B, L, d)
        if clamp_ids:
            x_in = inputs[sae.cfg.reads].to(dev) if sae.cfg.is_transcoder else x_on
            a_BLC = feature_acts(sae, x_in.reshape(B * L, -1), feats_C).view(B, L, -1)
            delta_BLD = delta_BLD + ((value_BC[:, None] - a_BLC) * on_BC[:, None]) @ dirs_CD
        # Rows without steering get exactly +0: their numbers are untouched. The edit
        # goes to the activation's device.
        return x_BLD + (delta_BLD * ok_BL[..., None]).to(x_BLD.device, x_BLD.dtype)

    return edit


@contextmanager
def steering_hooks(lm: LM, saes: dict[str, Sae], norms: dict[str, float],
                   rows: Sequence[Steering | None], *, prompt_len: int,
                   outlier_factor: float = OUTLIER_FACTOR) -> Iterator[_Cursor]:
    """Edit every steered layer for a batch whose row b carries `rows[b]` (None: no edit).
    Yields the cursor that the caller advances by the tokens each forward adds to the KV
    cache (0 for a forward without cache). All hooks are removed on exit, error or not."""
    cursor = _Cursor()
    with ExitStack() as hooks:
        steered = sorted({f.hookpoint for r in rows if r for f in r.features})
        reads = [saes[h].cfg.reads for h in steered if saes[h].cfg.is_transcoder]
        inputs = hooks.enter_context(capture(lm, reads, stop_early=False))
        for h in steered:
            edit = _layer_edit(saes[h], norms[h], rows, h, prompt_len, cursor, outlier_factor,
                               inputs)
            hooks.enter_context(edit_output(lm, h, edit))
        yield cursor
