"""What a feature does when pushed: the next tokens it makes more likely in context.

A few neutral everyday sentences (explore/concepts.py NEUTRAL) are read twice in one batch,
clean and with the feature's unit decoder direction added at `strength` x the layer's
typical residual norm at every position of its layer (edits.py FeatureSteer, mode "add"; as
in steering, position 0 and massive-activation tokens are left alone). At every position
after the first we compare the next-token distributions; a token's rise is the mean over
prompts (and, within a prompt, over its positions) of pushed minus clean probability.
Unlike the logit lens (the direction read by the unembedding alone), this runs the layers
above, so it shows what the model does with the push. Computed on demand, not stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from ..atlas.layout import LoadedAtlas
from ..errors import BadInput, check_text, check_whole
from ..explore.concepts import NEUTRAL, batch_with_offsets
from ..norms import typical_norms
from .edits import FeatureSteer, Steering, check_steering, steering_hooks

PUSH_STRENGTH = 0.3
"""Small: the finder's first probe strength (finder.PROBE_STRENGTHS), x the layer's norm."""
MAX_PROMPTS = 32
MAX_PROMPT_CHARS = 500
MAX_K = 100


class PushedToken(NamedTuple):
    token: str
    token_id: int
    rise: float
    """Mean pushed minus clean next-token probability."""
    clean: float
    """Mean clean probability."""
    pushed: float
    """Mean probability with the push."""


def _check(loaded: LoadedAtlas, hookpoint: object, feature: object, strength: object,
           prompts: object, k: object) -> tuple[Steering, list[str], int]:
    if not isinstance(hookpoint, str) or hookpoint not in loaded.saes:
        raise BadInput("hookpoint", f"hookpoint must be one of this SAE set's: "
                                    f"{', '.join(loaded.hookpoints)[:200]}")
    steering = Steering((FeatureSteer(hookpoint, feature, strength),))  # checks the numbers
    check_steering(steering, loaded.saes)  # the feature exists at that layer
    if isinstance(prompts, str) or not isinstance(prompts, Sequence) \
            or not 1 <= len(prompts) <= MAX_PROMPTS:
        raise BadInput("prompts", f"prompts must be a list of 1 to {MAX_PROMPTS} texts")
    texts = [check_text(p, "a prompt", max_chars=MAX_PROMPT_CHARS) for p in prompts]
    return steering, texts, check_whole(k, "k", 1, MAX_K)


@torch.inference_mode()
def pushed_tokens(loaded: LoadedAtlas, hookpoint: str, feature: int,
                  strength: float = PUSH_STRENGTH, prompts: Sequence[str] = NEUTRAL,
                  k: int = 10) -> list[PushedToken]:
    """The k tokens whose next-token probability rises most when the feature is pushed
    (module doc), most first. BadInput for an unknown hookpoint or feature, a strength out
    of steering's range, no or too many prompts, or k outside 1..MAX_K."""
    steering, texts, k = _check(loaded, hookpoint, feature, strength, prompts, k)
    lm = loaded.lm
    norms, _ = typical_norms(lm, loaded.saes, [hookpoint], corpus=loaded.corpus)
    ids_BL, mask_BL, _ = batch_with_offsets(loaded, texts)
    ids_BL, mask_BL = ids_BL.to(lm.device), mask_BL.to(lm.device)
    B = len(texts)
    rows = [None] * B + [steering] * B
    with steering_hooks(lm, loaded.saes, norms, rows, prompt_len=ids_BL.shape[1],
                        outlier_factor=loaded.outlier_factor):
        logits = lm.model(input_ids=ids_BL.repeat(2, 1), attention_mask=mask_BL.repeat(2, 1),
                          use_cache=False).logits.float()
    n_text = len(lm.tokenizer)  # the model's other rows pad its vocabulary
    probs = logits[..., :n_text].softmax(-1)
    # weights: each prompt counts once, spread over its positions after the first
    w_BL = mask_BL.double()
    w_BL[:, 0] = 0
    w_BL = w_BL / w_BL.sum(1, keepdim=True).clamp(min=1) / B
    clean_V = torch.einsum("bl,blv->v", w_BL, probs[:B].double())
    pushed_V = torch.einsum("bl,blv->v", w_BL, probs[B:].double())
    rise_V = pushed_V - clean_V
    top = rise_V.topk(min(k, len(rise_V)))
    ids = top.indices.tolist()
    words = lm.tokenizer.batch_decode([[i] for i in ids])
    return [PushedToken(w, i, float(rise_V[i]), float(clean_V[i]), float(pushed_V[i]))
            for w, i in zip(words, ids, strict=True)]
