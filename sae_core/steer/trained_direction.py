"""A steering direction trained for one concept in seconds, starting from an SAE feature's
decoder direction (in the spirit of ReFT-r1 / RePS, Wu et al. 2025, which train a steering
vector on the model's own outputs; here only its direction is learned, the dose stays fixed).

The edit is the one steering uses (edits.DirectionSteer): x -> x + s * n * v / |v| at
`layers.N`, with s the given strength and n the layer's typical norm. On the probe's prompts
and the model's own answers (effect.py), Adam moves v to raise the probability of the
concept's tokens at the answer positions while the mean KL(steered || unsteered) stays under
`max_kl`: a feature found by its pushed effect is a good start, not the best direction.

Only the layers from the edit up run at each step: the residual stream below it is recorded
once (hooks.record_blocks) and replayed (hooks.resume_after), the unsteered distribution is
computed once, and only the answer positions are unembedded. The model stays frozen; the
gradient goes to v alone (torch.autograd.grad). The result is measured with
effect.pushed_effects, as every other steering is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..activations import OUTLIER_FACTOR, parse_hookpoint
from ..errors import BadInput, check_number, check_whole
from ..hooks import output_tensor, record_blocks, resume_after
from ..lm import LM
from ..progress import Report
from ..sae import Sae
from .edits import DirectionSteer, Steering, check_strength, steering_hooks
from .effect import Effect, Probe, _logits_kwargs, pushed_effects

STEPS = 25
"""At most this many Adam steps, each a forward and backward of the probe above the edit
(about two forwards of that part of the model): the time budget of a few seconds."""
LR = 0.1
"""Adam's step per coordinate of v, whose coordinates have unit RMS (|v| = sqrt(D)): about
LR radians of turn per step whatever the width. On the tiny test model, 0.1 converged in
about 20 steps to what 0.05 reached in 40; 0.2 gained nothing more."""
KL_WEIGHT = 10.0
"""Penalty per nat of mean KL over the bound. Meant to exceed the concept log-probability a
nat of KL buys near the bound, so the bound holds (an exact penalty, see train_direction);
on the tiny test model the result lands within 1% of max_kl."""
PATIENCE = 6
"""Steps without a new best loss (by more than MIN_GAIN nats) before training stops."""
MIN_GAIN = 1e-3
MAX_STEPS = 1000


@dataclass(frozen=True)
class TrainedDirection:
    hookpoint: str
    strength: float
    """The dose it was trained (and measured) at, in multiples of the layer's typical norm."""
    direction: Tensor
    """(D,) unit-norm, on the CPU: the best direction seen (lowest training loss)."""
    p0: float
    """The unsteered concept probability on the probe."""
    before: Effect
    """The starting direction at `strength`, measured with effect.pushed_effects."""
    after: Effect
    """The trained direction at `strength`, measured the same way."""
    steps: int
    """Adam steps run (fewer than asked when training stopped early)."""
    seconds: float
    """Wall time of the whole call, the measurements included."""

    def steer(self) -> DirectionSteer:
        return DirectionSteer(self.hookpoint, self.direction, self.strength)


def _check(lm: LM, saes: dict[str, Sae], norms: dict[str, float], hookpoint: str,
           init_D: Tensor, probe: Probe, concept_ids: Tensor, strength: float, max_kl: float,
           steps: int, lr: float, kl_weight: float) -> None:
    if not isinstance(hookpoint, str) or hookpoint not in saes:
        raise BadInput("hookpoint", f"this SAE set has no SAE at {hookpoint!r:.40} (it has "
                                    f"{', '.join(sorted(saes))})")
    if hookpoint not in norms:
        raise BadInput("norms", f"no typical norm given for {hookpoint}")
    d_in = saes[hookpoint].cfg.d_in
    if not isinstance(init_D, Tensor) or init_D.shape != (d_in,) \
            or not init_D.is_floating_point():
        raise BadInput("direction", f"the starting direction must be a float tensor of shape "
                                    f"({d_in},)")
    if not bool(torch.isfinite(init_D).all()) or not bool(init_D.any()):
        raise BadInput("direction", "the starting direction must be finite and nonzero")
    check_strength(strength)
    if strength == 0:
        raise BadInput("strength", "a direction cannot be trained at strength 0: it does "
                                   "nothing there")
    for name, value in (("max_kl", max_kl), ("lr", lr)):
        if not isinstance(value, int | float) or isinstance(value, bool) \
                or not math.isfinite(value) or value <= 0:
            raise BadInput(name, f"{name} must be a positive number, got {value!r:.40}")
    check_number(kl_weight, "kl_weight", 0.0, 1e6)
    check_whole(steps, "steps", 1, MAX_STEPS)
    if not isinstance(probe, Probe) or not probe.prompts:
        raise BadInput("probe", "a probe with at least one prompt is needed")
    if not isinstance(concept_ids, Tensor) or concept_ids.ndim != 1 or not len(concept_ids) \
            or concept_ids.is_floating_point() \
            or not bool(((concept_ids >= 0) & (concept_ids < len(lm.tokenizer))).all()):
        raise BadInput("concept_ids", "the concept's token ids must be a nonempty 1-D integer "
                                      "tensor of ids in the tokenizer's vocabulary")


@dataclass(frozen=True)
class _Group:
    """Probe prompts of the same prompt and answer lengths, run as one batch."""

    seq_BL: Tensor
    prompt_len: int
    T: int
    recorded: object
    """The raw output of the last replayed block (None: nothing replayed)."""
    logp0_BTV: Tensor
    """Unsteered log-probabilities at the answer positions."""


def _groups(probe: Probe) -> dict[tuple[int, int], list[int]]:
    by_len: dict[tuple[int, int], list[int]] = {}
    for i, (ids_P, answer_T) in enumerate(zip(probe.prompts, probe.answers, strict=True)):
        by_len.setdefault((len(ids_P), len(answer_T)), []).append(i)
    return by_len


def _answer_logprobs(lm: LM, logits_BLV: Tensor, T: int) -> Tensor:
    """(B, T, V) log-probabilities at the positions that predict the answer's tokens, over the
    tokenizer's vocabulary (as effect._next_logprobs; sliced rather than masked with -inf,
    whose 0 * inf would put NaN in the KL's gradient)."""
    return logits_BLV[:, -(T + 1):-1, :len(lm.tokenizer)].float().log_softmax(-1)


def _replayed_block(hookpoint: str) -> int:
    """The last block whose recorded output a step replays: the edited block itself for its
    output (`layers.N`: its forward hook edits the replayed output), the one below for an
    edit inside block N (-1: none, the forward runs from the embeddings)."""
    layer, sub = parse_hookpoint(hookpoint)
    return layer if not sub else layer - 1


def _prepare(lm: LM, probe: Probe, replayed: int) -> list[_Group]:
    """One unsteered forward per group, under no_grad (not inference_mode: its tensors meet
    the gradient later)."""
    groups = []
    for (P, T), idx in _groups(probe).items():
        seq_BL = torch.stack([torch.cat([probe.prompts[i], probe.answers[i]]) for i in idx]
                             ).to(lm.device, torch.long)
        with torch.no_grad(), record_blocks(lm) as blocks:
            logits = lm.model(input_ids=seq_BL, use_cache=False,
                              **_logits_kwargs(lm, T + 1)).logits
        recorded = blocks[replayed] if replayed >= 0 else None
        groups.append(_Group(seq_BL, P, T, recorded, _answer_logprobs(lm, logits, T)))
    return groups


def _losses(lm: LM, saes: dict[str, Sae], norms: dict[str, float], hookpoint: str,
            v_D: Tensor, strength: float, groups: Sequence[_Group], ids: Tensor,
            replayed: int, outlier_factor: float) -> tuple[Tensor, Tensor]:
    """(mean -log P(concept), mean KL(steered || unsteered)) over answer positions, then
    prompts, with the edit along v_D at `strength`; differentiable in v_D."""
    nll, kl, n = v_D.new_zeros(()), v_D.new_zeros(()), 0
    for g in groups:
        B = len(g.seq_BL)
        rows = [Steering((DirectionSteer(hookpoint, v_D, strength),))] * B
        with steering_hooks(lm, saes, norms, rows, prompt_len=g.prompt_len,
                            outlier_factor=outlier_factor):
            kw = {"input_ids": g.seq_BL, "use_cache": False, **_logits_kwargs(lm, g.T + 1)}
            if g.recorded is None:
                logits = lm.model(**kw).logits
            else:
                with resume_after(lm, replayed, g.recorded, output_tensor(g.recorded)):
                    logits = lm.model(**kw).logits
        logp_BTV = _answer_logprobs(lm, logits, g.T)
        nll = nll - logp_BTV[..., ids].logsumexp(-1).mean(-1).sum()
        kl_BT = (logp_BTV.exp() * (logp_BTV - g.logp0_BTV)).sum(-1)
        kl = kl + kl_BT.mean(-1).sum()
        n += B
    return nll / n, kl / n


def train_direction(lm: LM, saes: dict[str, Sae], norms: dict[str, float], hookpoint: str,
                    init_D: Tensor, probe: Probe, concept_ids: Tensor, *, strength: float,
                    max_kl: float, steps: int = STEPS, lr: float = LR,
                    kl_weight: float = KL_WEIGHT, report: Report | None = None,
                    outlier_factor: float = OUTLIER_FACTOR) -> TrainedDirection:
    """Turn `init_D` (e.g. the best feature's decoder row at `hookpoint`) into the direction
    that, added at `strength`, most raises the concept tokens' probability on the probe with
    mean KL(steered || unsteered) at most `max_kl` nats (a penalty of `kl_weight` per nat
    over). `norms`: the typical residual norm of `hookpoint`. Returns the best direction seen
    and its effect next to the start's, both measured with effect.pushed_effects."""
    start = time.perf_counter()
    _check(lm, saes, norms, hookpoint, init_D, probe, concept_ids, strength, max_kl, steps,
           lr, kl_weight)
    report = report or (lambda message, fraction, **_: None)
    ids = concept_ids.to(lm.device, torch.long)
    replayed = _replayed_block(hookpoint)
    # Not under an outer inference_mode: its tensors cannot be saved for backward.
    with torch.inference_mode(False), torch.enable_grad():
        groups = _prepare(lm, probe, replayed)
        D = init_D.numel()
        init = init_D.detach().float()
        # |v| = sqrt(D): unit-RMS coordinates, so Adam's per-coordinate step turns v by about
        # `lr` radians whatever the width (the edit reads only v's direction).
        v_D = (init / init.norm() * math.sqrt(D)).to(lm.device).requires_grad_(True)
        opt = torch.optim.Adam([v_D], lr=lr)
        best_loss, best_D, since, done = math.inf, v_D.detach().clone(), 0, 0
        for step in range(steps):
            nll, kl = _losses(lm, saes, norms, hookpoint, v_D, strength, groups, ids,
                              replayed, outlier_factor)
            # A hinge on the probe's mean KL, the number the dose rule bounds: no cost under
            # the bound, so the direction may spend KL where it buys concept probability,
            # and with a weight above the exchange rate near the bound the penalty is exact
            # (the constrained optimum minimises it; a squared hinge would always overshoot).
            loss = nll + kl_weight * torch.relu(kl - max_kl)
            (grad_D,) = torch.autograd.grad(loss, [v_D])
            done, value = step + 1, float(loss.detach())
            since = 0 if value < best_loss - MIN_GAIN else since + 1
            if value < best_loss:
                best_loss, best_D = value, v_D.detach().clone()
            report(f"training the direction: step {done}, -log P {float(nll.detach()):.2f}, "
                   f"KL {float(kl.detach()):.2f}", done / (steps + 1))
            if since >= PATIENCE:
                break
            v_D.grad = grad_D
            opt.step()
    direction = (best_D / best_D.norm()).cpu()
    rows = [Steering((DirectionSteer(hookpoint, init_D.detach(), strength),)),
            Steering((DirectionSteer(hookpoint, direction, strength),))]
    p0, (before, after) = pushed_effects(lm, saes, norms, probe, rows, concept_ids,
                                         outlier_factor=outlier_factor)
    report("trained", 1.0)
    return TrainedDirection(hookpoint, float(strength), direction, p0, before, after, done,
                            time.perf_counter() - start)
