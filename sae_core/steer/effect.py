"""What a steering does to the next-token distribution, measured from batched forwards (no
generation): the probability of the concept's tokens and the KL divergence from the
unsteered distribution, teacher-forced on the unsteered answers to a few neutral prompts.

A probe is a few chat prompts, each with the model's own greedy answer (its first
`answer_tokens` tokens). A steering row reads the prompt and that answer with the edit in
place; at each answer position we compare its next-token distribution p_s with the
unsteered one p_0:
- concept probability: sum of p_s over the concept's token ids (concept_tokens.py);
- KL(p_s || p_0): how surprised the unsteered model is by the steered choices, the
  per-token cost in fluency (the log perplexity ratio of steered text, to first order).
Both are averaged over positions, then prompts.

The layers below a row's first edit compute the same numbers for every row, so they run once
per prompt: rows are batched by their first edited layer and the forward resumes there from
the recorded residual stream (hooks.resume_after), which saves most of the work for the deep
layers where steering features live.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from weakref import WeakKeyDictionary

import torch
from torch import Tensor

from ..activations import OUTLIER_FACTOR
from ..hooks import output_tensor, record_blocks, resume_after
from ..lm import LM
from ..precision import autocast
from ..sae import Sae
from .edits import Steering, steering_hooks
from .generation import GenConfig, generate, prompt_ids

PROBE_PROMPTS = (
    "Tell me about your day.",
    "What should I do this afternoon?",
    "Write a few sentences about anything you like.",
    "Describe a place you know well.",
)
"""Neutral prompts the finder measures on (none of them is a benchmark or preset prompt)."""
ANSWER_TOKENS = 12
MAX_BATCH_ROWS = 32


@dataclass(frozen=True)
class Probe:
    prompts: tuple[Tensor, ...]
    """Per prompt, (P,) token ids of the chat-templated prompt."""
    answers: tuple[Tensor, ...]
    """Per prompt, (T,) the unsteered greedy answer's first tokens."""


@dataclass(frozen=True)
class Effect:
    concept_prob: float
    """Mean probability of the next token being one of the concept's tokens."""
    kl: float
    """Mean KL(steered || unsteered) of the next-token distribution, in nats."""


_probes: WeakKeyDictionary = WeakKeyDictionary()  # model -> {(prompts, length): Probe}
_probe_lock = threading.Lock()


def make_probe(lm: LM, prompts: Sequence[str] = PROBE_PROMPTS,
               answer_tokens: int = ANSWER_TOKENS) -> Probe:
    """The prompts with their unsteered greedy answers (written once per model and kept)."""
    key = (tuple(prompts), answer_tokens)
    with _probe_lock:
        mine = _probes.setdefault(lm.model, {})
        if key not in mine:
            gen = GenConfig(max_new_tokens=answer_tokens)
            ids = [prompt_ids(lm, p, gen) for p in prompts]
            answers = [torch.tensor(generate(lm, {}, {}, p, [None], gen)[0],
                                    dtype=torch.long)  # cpu: kept with the prompts' ids
                       for p in ids]
            keep = [i for i, a in enumerate(answers) if len(a) >= 2]  # an answer to read
            if not keep:
                raise ValueError("the model answered none of the probe prompts")
            mine[key] = Probe(tuple(ids[i] for i in keep), tuple(answers[i] for i in keep))
        return mine[key]


def _first_layer(row: Steering) -> int:
    return min(f.layer for f in row.features)


def _logits_kwargs(lm: LM, n: int) -> dict:
    """Compute the unembedding only for the last n positions where the model supports it."""
    params = inspect.signature(lm.model.forward).parameters
    return {"logits_to_keep": n} if "logits_to_keep" in params else {}


def _answer_logits_kwargs(lm: LM, L: int, T: int) -> dict:
    """Compute the unembedding only at the T positions that predict the answer (positions
    L-T-1 .. L-2) where the model supports it: it is the largest matmul of a deep row."""
    if not _logits_kwargs(lm, T):
        return {}
    return {"logits_to_keep": torch.arange(L - T - 1, L - 1, device=lm.device)}


def _next_logprobs(lm: LM, logits_BLV: Tensor, T: int) -> Tensor:
    """(B, T, V) log-probabilities at the T positions that predict the answer's tokens
    (the logits are those T positions, or every position of the sequence)."""
    logits = (logits_BLV if logits_BLV.shape[1] == T else logits_BLV[:, -(T + 1):-1]).float()
    logits[..., len(lm.tokenizer):] = -torch.inf  # padding rows of the vocabulary
    return logits.log_softmax(-1)


@torch.inference_mode()
def _one_prompt(lm: LM, saes: dict[str, Sae], norms: dict[str, float], ids_P: Tensor,
                answer_T: Tensor, rows: Sequence[Steering], concept_ids: Tensor,
                outlier_factor: float) -> tuple[float, Tensor, Tensor]:
    """(unsteered concept probability, (R,) concept probabilities, (R,) KLs) on one prompt;
    the forwards run on the LM's device, the (R,) values come back on the CPU."""
    seq_1L = torch.cat([ids_P, answer_T])[None].to(lm.device)
    concept_ids = concept_ids.to(lm.device)
    T = len(answer_T)
    kw = _answer_logits_kwargs(lm, seq_1L.shape[1], T)
    with record_blocks(lm) as blocks:
        logp0_1TV = _next_logprobs(lm, lm.model(input_ids=seq_1L, use_cache=False, **kw)
                                   .logits, T)
    p0 = float(logp0_1TV.exp()[..., concept_ids].sum(-1).mean())
    prob_R, kl_R = torch.zeros(len(rows)), torch.zeros(len(rows))  # cpu: results, see above
    for chunk in _chunks(rows):
        layer = _first_layer(rows[chunk[0]])
        with steering_hooks(lm, saes, norms, [rows[r] for r in chunk], prompt_len=len(ids_P),
                            outlier_factor=outlier_factor):
            seq_BL = seq_1L.expand(len(chunk), -1)
            if layer == 0:  # nothing to reuse
                logits = lm.model(input_ids=seq_BL, use_cache=False, **kw).logits
            else:  # blocks 0..layer-1 replay their recorded output for every row
                resid = blocks[layer - 1]
                resid_BLD = output_tensor(resid).expand(len(chunk), -1, -1)
                with resume_after(lm, layer - 1, resid, resid_BLD):
                    logits = lm.model(input_ids=seq_BL, use_cache=False, **kw).logits
        logp_BTV = _next_logprobs(lm, logits, T)
        p_BTV = logp_BTV.exp()
        prob_R[chunk] = p_BTV[..., concept_ids].sum(-1).mean(-1).cpu()
        kl_BT = (p_BTV * (logp_BTV - logp0_1TV)).nan_to_num().sum(-1)
        kl_R[chunk] = kl_BT.clamp_min(0).mean(-1).cpu()
    return p0, prob_R, kl_R


def _chunks(rows: Sequence[Steering]) -> list[list[int]]:
    """Row indices in batches of at most MAX_BATCH_ROWS that share their first edited layer:
    each batch resumes at its own layer (a batch that mixed layers would run the deeper
    rows through the blocks below them for nothing)."""
    by_layer: dict[int, list[int]] = {}
    for r, row in enumerate(rows):
        by_layer.setdefault(_first_layer(row), []).append(r)
    return [rs[i:i + MAX_BATCH_ROWS] for _, rs in sorted(by_layer.items())
            for i in range(0, len(rs), MAX_BATCH_ROWS)]


def pushed_effects(lm: LM, saes: dict[str, Sae], norms: dict[str, float], probe: Probe,
                   rows: Sequence[Steering], concept_ids: Tensor, *,
                   outlier_factor: float = OUTLIER_FACTOR, bf16: bool = False
                   ) -> tuple[float, list[Effect]]:
    """(the unsteered concept probability, each row's Effect), averaged over the probe's
    prompts. `norms`: the typical residual norm of every steered hookpoint. `bf16`: the
    forwards' matmuls in bf16 where the device runs it natively (precision.autocast), the
    unsteered reference included."""
    if not rows:
        raise ValueError("no steering to measure")
    p0, prob_R, kl_R = 0.0, torch.zeros(len(rows)), torch.zeros(len(rows))  # cpu: as _one_prompt
    for ids_P, answer_T in zip(probe.prompts, probe.answers, strict=True):
        with autocast(bf16, lm.device):
            p, prob, kl = _one_prompt(lm, saes, norms, ids_P, answer_T, rows, concept_ids,
                                      outlier_factor)
        p0, prob_R, kl_R = p0 + p, prob_R + prob, kl_R + kl
    n = len(probe.prompts)
    return p0 / n, [Effect(float(p) / n, float(k) / n) for p, k in zip(prob_R, kl_R,
                                                                        strict=True)]
