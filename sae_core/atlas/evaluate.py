"""Held-out quality of a set of SAEs: FVU, L0, dead latents, CE loss recovered."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from functools import partial

import torch
from torch import Tensor

from ..activations import OUTLIER_FACTOR, keep_mask, parse_hookpoint
from ..hooks import edit_output, output_tensor, record_blocks, resume_after, run_captured
from ..lm import LM
from ..metrics import RunningFvu, ce_loss_recovered, cross_entropy
from ..precision import autocast
from ..progress import Report
from ..sae import Sae


@torch.inference_mode()
def reconstruction_stats(
    lm: LM, saes: dict[str, Sae], windows_WL: Tensor, medians: dict[str, float], *,
    outlier_factor: float = OUTLIER_FACTOR, batch: int = 16, bf16: bool = True,
) -> dict[str, RunningFvu]:
    """One captured forward per batch for all hookpoints; FVU/L0/firing counts per SAE."""
    stats = {h: RunningFvu() for h in saes}
    for start in range(0, len(windows_WL), batch):
        acts = run_captured(lm, windows_WL[start:start + batch], list(saes), bf16=bf16)
        for h, sae in saes.items():
            x = acts[h][keep_mask(acts[h], medians[h], outlier_factor)].float()
            out = sae(x)
            stats[h].update(x, out.x_hat, out.acts)
    return stats


@torch.inference_mode()
def ce_losses(
    lm: LM, saes: dict[str, Sae], windows_WL: Tensor, medians: dict[str, float], *,
    outlier_factor: float = OUTLIER_FACTOR, bf16: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Clean, SAE-spliced and zero-ablated LM loss per hookpoint, and the share recovered.

    Only the positions the SAE was trained on are replaced (not position 0 or massive
    activations), for both the splice and the ablation. For residual hookpoints the edited
    forwards resume from the clean run's residual stream instead of recomputing the blocks
    before it (about 40% less work over 30 layers).
    """

    def loss(edit=None) -> float:
        with edit or nullcontext(), autocast(bf16):
            return cross_entropy(lm.model(windows_WL, use_cache=False).logits, windows_WL)

    with record_blocks(lm) as blocks:
        clean = loss()
    out = {}
    for i, (h, sae) in enumerate(saes.items()):
        def splice(act, sae=sae, h=h, zero=False):
            keep = keep_mask(act, medians[h], outlier_factor)
            new = act.clone()
            new[keep] = 0 if zero else sae(act[keep].float()).x_hat.to(act.dtype)
            return new

        layer, is_mlp = parse_hookpoint(h)
        if is_mlp:
            spliced = loss(edit_output(lm, h, splice))
            ablated = loss(edit_output(lm, h, partial(splice, zero=True)))
        else:
            act = output_tensor(blocks[layer])
            spliced = loss(resume_after(lm, layer, blocks[layer], splice(act)))
            ablated = loss(resume_after(lm, layer, blocks[layer], splice(act, zero=True)))
        out[h] = {"ce_clean": clean, "ce_spliced": spliced, "ce_ablated": ablated,
                  "ce_recovered": ce_loss_recovered(clean, spliced, ablated)}
        if progress is not None:
            progress(i + 1, len(saes))
    return out


def evaluate_atlas(
    lm: LM, saes: dict[str, Sae], medians: dict[str, float], windows_WL: Tensor, *,
    outlier_factor: float, ce_windows: int = 4, report: Report | None = None,
) -> dict[str, dict]:
    """metrics.json: reconstruction on all `windows_WL`, CE loss on the first `ce_windows`."""
    stats = reconstruction_stats(lm, saes, windows_WL, medians, outlier_factor=outlier_factor)
    ce = ce_losses(
        lm, saes, windows_WL[:ce_windows], medians, outlier_factor=outlier_factor,
        progress=(lambda i, n: report(f"CE loss, layer {i}/{n}", i / n)) if report else None,
    )
    return {h: {"fvu": s.fvu(), "l0": s.l0(), "dead_frac_heldout": s.dead_fraction(),
                "heldout_tokens": s.n, **ce[h]} for h, s in stats.items()}
