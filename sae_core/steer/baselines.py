"""The baselines an SAE steering must beat (AxBench, Wu et al., 2025):
- a difference-of-means direction: the mean residual stream on sentences about the concept
  minus the mean on the same sentences about everyday things, at one layer;
- prompting: the concept named in the prompt itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..activations import keep_mask
from ..atlas.layout import LoadedAtlas
from ..explore.concepts import TEMPLATES, batch_with_offsets
from ..hooks import run_captured
from ..norms import typical_norms
from .concept_tokens import concept_token_ids
from .dose import DoseCurve, DoseRule, dose_search, trial_strengths
from .edits import DirectionSteer, Steering
from .effect import Probe, pushed_effects
from .text_check import by_preference, check_texts

EVERYDAY = ("the weather", "a meeting", "the weekend", "dinner", "the news", "my work")
"""What the neutral sentences are about: the templates' slot filled with everyday things."""
SENTENCES = (*TEMPLATES, "We spent the whole afternoon reading about {c}.",
             "Her favourite subject has always been {c}.",
             "The children asked a hundred questions about {c}.")
"""Sentence templates of the difference of means: 8 x the concept's words (at least 4 in
the benchmark) make at least 32 sentences on each side (issue 27 asked for 30 or more; the
first version used 5 templates)."""
MAX_CONCEPT_WORDS = 6
PROMPTING = "{prompt}\nMake your answer about {concept}."


def mean_difference(pos_ND: Tensor, neg_MD: Tensor) -> Tensor:
    """(D,) mean of the positive rows minus mean of the negative rows."""
    if not len(pos_ND) or not len(neg_MD):
        raise ValueError("a difference of means needs rows on both sides")
    return pos_ND.float().mean(0) - neg_MD.float().mean(0)


def _slot_residuals(loaded: LoadedAtlas, hookpoint: str, fillers: Sequence[str]) -> Tensor:
    """(N, D) residuals at `hookpoint` of every template filled with every filler, taken
    from the filler's first token on (the tokens before it are the same on both sides); on
    the CPU."""
    texts, starts = [], []
    for t in SENTENCES:
        for f in fillers:
            texts.append(t.replace("{c}", f))
            starts.append(t.index("{c}"))
    ids, mask, offsets = batch_with_offsets(loaded, texts)
    acts = run_captured(loaded.lm, ids, [hookpoint], bf16=False, attention_mask=mask)[hookpoint]
    keep_BL = keep_mask(acts, loaded.medians[hookpoint], loaded.outlier_factor).cpu() \
        & mask.bool()
    for i, (start, offs) in enumerate(zip(starts, offsets, strict=True)):
        pad = [False] * (ids.shape[1] - len(offs))
        keep_BL[i] &= ~torch.tensor([b <= start for _, b in offs] + pad)  # cpu: as the mask
    return acts[keep_BL.to(acts.device)].float().cpu()


def diff_of_means(loaded: LoadedAtlas, hookpoint: str, words: Sequence[str]) -> Tensor:
    """(D,) the difference-of-means direction of the concept (its first words) at a layer."""
    if hookpoint not in loaded.saes:
        raise ValueError(f"this SAE set has no SAE at {hookpoint}")
    concept = _slot_residuals(loaded, hookpoint, list(words)[:MAX_CONCEPT_WORDS])
    return mean_difference(concept, _slot_residuals(loaded, hookpoint, EVERYDAY))


def dosed_direction(loaded: LoadedAtlas, hookpoint: str | Sequence[str],
                    v_D: Tensor | Sequence[Tensor], words: Sequence[str], probe: Probe,
                    rule: DoseRule) -> tuple[float | None, DoseCurve]:
    """(the strength to steer along v_D with, its dose curve), chosen as the finder chooses
    for its features: the dose curve on the probe, then a text check of the trial strengths
    (finder.py); None: every strength moves the text past STRETCH x the KL bound. Several
    hookpoints with one direction each share the strength as the finder's combinations do
    (each at s / sqrt(k))."""
    hookpoints = [hookpoint] if isinstance(hookpoint, str) else list(hookpoint)
    dirs = [v_D] if isinstance(v_D, Tensor) else list(v_D)
    ids = concept_token_ids(loaded.lm.tokenizer, words)
    norms, _ = typical_norms(loaded.lm, loaded.saes, hookpoints, corpus=loaded.corpus)
    share = 1 / len(hookpoints) ** 0.5

    def rows(grid: Sequence[float]) -> list[Steering]:
        return [Steering(tuple(DirectionSteer(h, v, s * share)
                               for h, v in zip(hookpoints, dirs, strict=True)))
                for s in grid]

    curve = dose_search(lambda grid: pushed_effects(
        loaded.lm, loaded.saes, norms, probe, rows(grid), ids,
        outlier_factor=loaded.outlier_factor), rule)
    trials = trial_strengths(curve, rule)
    if not trials:
        return None, curve
    checks = check_texts(loaded, norms, probe.prompts, rows(trials), words)
    best = by_preference(checks, [curve.effect_at(s) for s in trials])[0]
    return trials[best], curve


def prompted(prompt: str, concept: str) -> str:
    """The prompting baseline: the user's prompt with the concept asked for."""
    return PROMPTING.format(prompt=prompt.strip(), concept=concept.strip())
