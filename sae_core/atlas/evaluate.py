"""Held-out quality of a set of SAEs: FVU, L0, dead latents, CE loss recovered (against zero
and mean ablation), KL, and the tokens the evaluation leaves out.

A transcoder (transcoder.py) is scored on what it predicts: FVU of its output site (the MLP
output) against its prediction from its input site, on the tokens the output site keeps;
spliced, its prediction from the same forward's MLP input replaces the MLP output.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor

from ..activations import OUTLIER_FACTOR, keep_mask, parse_hookpoint
from ..hooks import capture, edit_output, output_tensor, record_blocks, resume_after, run_captured
from ..lm import LM
from ..metrics import (
    RunningFvu,
    clean_dists,
    left_out,
    mean_and_se,
    ratio_and_se,
    window_losses,
)
from ..precision import autocast
from ..progress import Report
from ..sae import Sae
from ..transcoder import input_of, sites


@torch.inference_mode()
def reconstruction_stats(
    lm: LM, saes: dict[str, Sae], windows_WL: Tensor, medians: dict[str, float], *,
    outlier_factor: float = OUTLIER_FACTOR, batch: int = 16, bf16: bool = True,
) -> dict[str, RunningFvu]:
    """One captured forward per batch for all hookpoints; FVU/L0/firing counts per SAE.
    The SAEs run on the LM's device (layout.fit_to); the sums accumulate there."""
    stats = {h: RunningFvu() for h in saes}
    for start in range(0, len(windows_WL), batch):
        acts = run_captured(lm, windows_WL[start:start + batch], sites(saes), bf16=bf16)
        add_reconstruction(stats, saes, acts, medians, outlier_factor)
    return stats


@torch.inference_mode()
def add_reconstruction(stats: dict[str, RunningFvu], saes: dict[str, Sae],
                       acts: dict[str, Tensor], medians: dict[str, float],
                       outlier_factor: float) -> None:
    """Add one batch of captured activations (`transcoder.sites`) to each SAE's running FVU
    (fp32 SAEs on the kept tokens, as they were trained); a transcoder's target is its output
    site, its input what it reads there."""
    for h, sae in saes.items():
        keep = keep_mask(acts[h], medians[h], outlier_factor)
        y, x = acts[h][keep].float(), input_of(h, sae, acts)[keep].float()
        out = sae(x)
        stats[h].update(y, out.x_hat, out.acts)


def spread_windows(n_windows: int, n: int) -> Tensor:
    """`min(n, n_windows)` distinct indices evenly spaced over 0..n_windows-1, first and
    last included: held-out windows are sorted by corpus position, so every genre is in."""
    n = min(n, n_windows)
    if n == 1:
        return torch.zeros(1, dtype=torch.long)  # cpu: rows of CPU windows
    spaced = torch.linspace(0, n_windows - 1, n, dtype=torch.float64)  # cpu: as above
    return (spaced + 0.5).floor().long()


def _splicer(sae: Sae, median: float, outlier_factor: float, fill: Tensor | float | None):
    """The edit that replaces the positions the SAE was trained on (not position 0 or
    massive activations) by its reconstruction (`fill` None), or by `fill`: 0 for zero
    ablation, the mean activation for mean ablation; a transcoder predicts them from `x_in`,
    its input in the same forward."""
    def splice(act: Tensor, x_in: Tensor | None = None) -> Tensor:
        keep = keep_mask(act, median, outlier_factor)
        new = act.clone()
        if fill is None:
            x = act if x_in is None else x_in
            new[keep] = sae(x[keep].float()).x_hat.to(act.dtype)
        else:
            new[keep] = fill.to(act.dtype) if isinstance(fill, Tensor) else fill
        return new
    return splice


@contextmanager
def _edited(lm: LM, h: str, sae: Sae, fn: Callable[..., Tensor], blocks: list):
    """The context in which forwards see `fn` applied at hookpoint `h` (where the SAE is
    put: the lab's SAEs carry no hookpoint of their own); for a residual hookpoint they
    resume from the clean output `blocks` recorded, edited; a transcoder's edit gets the MLP
    input that the same forward captured just before."""
    layer, is_mlp = parse_hookpoint(h)
    if not is_mlp:
        with resume_after(lm, layer, blocks[layer], fn(output_tensor(blocks[layer]))):
            yield
    elif not sae.cfg.is_transcoder:
        with edit_output(lm, h, fn):
            yield
    else:
        reads = sae.cfg.reads
        with capture(lm, [reads], stop_early=False) as acts, \
                edit_output(lm, h, lambda out: fn(out, acts[reads])):
            yield


@torch.inference_mode()
def ce_per_window(
    lm: LM, saes: dict[str, Sae], windows_WL: Tensor, medians: dict[str, float], *,
    outlier_factor: float = OUTLIER_FACTOR, bf16: bool = True, batch: int = 8,
    progress: Callable[[int, int], None] | None = None, means: dict[str, Tensor] | None = None,
) -> dict[str, dict[str, Tensor]]:
    """Per hookpoint, per window (W,): clean, SAE-spliced and zero-ablated LM loss, the mean
    per-token KL(clean || spliced) and, given each hookpoint's mean activation (`means`),
    the mean-ablated loss ("mean_ablated"). Ablations replace the same positions as the
    splice (never position 0 or massive activations).

    `batch` windows share each forward. For residual hookpoints the edited forwards resume
    from the clean run's residual stream instead of recomputing the blocks before it (about
    40% less work over 30 layers); MLP hookpoints rerun the whole model with an edit. The
    forwards run on the LM's device; the per-window values come back on the CPU."""
    device = lm.device
    fills = {h: {"spliced": None, "ablated": 0.0}
             | ({"mean_ablated": means[h].to(device)} if means else {}) for h in saes}
    rows: dict[str, dict[str, list[Tensor]]] = {
        h: {k: [] for k in ("clean", *fills[h], "kl")} for h in saes}
    starts = range(0, len(windows_WL), batch)
    for b, start in enumerate(starts):
        ids = windows_WL[start:start + batch].to(device)

        def logits(edit=None, ids=ids) -> Tensor:
            with edit or nullcontext(), autocast(bf16, device):
                return lm.model(ids, use_cache=False).logits

        with record_blocks(lm) as blocks:
            clean_logits = logits()
        clean, _ = window_losses(clean_logits, ids)
        dists = clean_dists(clean_logits)  # 400 MB at batch 8 and a 49k vocabulary
        del clean_logits
        for i, (h, sae) in enumerate(saes.items()):
            rows[h]["clean"].append(clean.cpu())
            for key, fill in fills[h].items():
                fn = _splicer(sae, medians[h], outlier_factor, fill)
                loss, kl = window_losses(logits(_edited(lm, h, sae, fn, blocks)), ids,
                                         dists if fill is None else None)
                rows[h][key].append(loss.cpu())
                if fill is None:
                    rows[h]["kl"].append(kl.cpu())
            if progress is not None:
                progress(b * len(saes) + i + 1, len(starts) * len(saes))
    return {h: {k: torch.cat(v) for k, v in per.items()} for h, per in rows.items()}


def ce_summary(per_window: dict[str, Tensor]) -> dict[str, float]:
    """metrics.json's CE keys from one hookpoint's per-window values: means over windows,
    CE recovered as a ratio of window sums (the windows are of equal length, so these are
    the token means), each with its standard error across windows (`mean_and_se`; the
    ratio's by the delta method, `ratio_and_se`). Against zero ablation ("ce_recovered")
    and, when measured, against mean ablation ("ce_recovered_mean")."""
    clean, spliced, ablated = (per_window[k] for k in ("clean", "spliced", "ablated"))
    recovered, recovered_se = ratio_and_se(ablated - spliced, ablated - clean)
    kl, kl_se = mean_and_se(per_window["kl"])
    out = {"ce_clean": float(clean.mean()), "ce_spliced": float(spliced.mean()),
           "ce_ablated": float(ablated.mean()), "ce_recovered": recovered,
           "ce_recovered_se": recovered_se, "kl": kl, "kl_se": kl_se,
           "ce_windows": len(clean)}
    if (mean := per_window.get("mean_ablated")) is not None:
        ratio, se = ratio_and_se(mean - spliced, mean - clean)
        out |= {"ce_mean_ablated": float(mean.mean()), "ce_recovered_mean": ratio,
                "ce_recovered_mean_se": se}
    return out


def ce_losses(
    lm: LM, saes: dict[str, Sae], windows_WL: Tensor, medians: dict[str, float], *,
    outlier_factor: float = OUTLIER_FACTOR, bf16: bool = True, batch: int = 8,
    progress: Callable[[int, int], None] | None = None, means: dict[str, Tensor] | None = None,
) -> dict[str, dict[str, float]]:
    """Per hookpoint: clean, spliced and ablated loss, CE loss recovered (against zero
    ablation, and mean ablation given `means`) and KL to the clean model, with standard
    errors across `windows_WL` (`ce_per_window`, `ce_summary`)."""
    per = ce_per_window(lm, saes, windows_WL, medians, outlier_factor=outlier_factor,
                        bf16=bf16, batch=batch, progress=progress, means=means)
    return {h: ce_summary(p) for h, p in per.items()}


def evaluate_atlas(
    lm: LM, saes: dict[str, Sae], medians: dict[str, float], windows_WL: Tensor, *,
    outlier_factor: float, ce_windows: int = 32, report: Report | None = None,
    recon: dict[str, RunningFvu] | None = None,
) -> dict[str, dict]:
    """metrics.json: reconstruction on all `windows_WL` (`recon` when a pass over them has
    measured it already: explore/one_pass.py); CE loss and KL on `ce_windows` of them spread
    evenly over the set (`spread_windows`), 8 to a forward, against zero ablation and mean
    ablation (the mean of the kept held-out activations at the hookpoint). Records the
    tokens the evaluation leaves out (`left_out`: position 0, norms over outlier_factor x
    the median)."""
    stats = recon if recon is not None else reconstruction_stats(
        lm, saes, windows_WL, medians, outlier_factor=outlier_factor)
    pick = spread_windows(len(windows_WL), ce_windows)
    ce = ce_losses(
        lm, saes, windows_WL[pick], medians, outlier_factor=outlier_factor,
        progress=(lambda i, n: report(f"CE loss and KL, step {i}/{n}", i / n)) if report
        else None, means={h: s.mean() for h, s in stats.items()},
    )
    return {h: {"fvu": s.fvu(), "l0": s.l0(), "dead_frac_heldout": s.dead_fraction(),
                "heldout_tokens": s.n, **left_out(windows_WL.shape, s.n, outlier_factor),
                **ce[h]} for h, s in stats.items()}
