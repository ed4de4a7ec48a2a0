"""Sweeps and recipe comparisons: SAEs trained on the same rows with one thing changed,
scored on the same held-out rows (and, on a model layer, spliced into the same held-out
windows for CE loss recovered). Each run's training time is measured around its fit."""

from __future__ import annotations

from dataclasses import replace

from ..atlas.evaluate import ce_losses
from ..config import TrainConfig
from ..lm import LM
from ..progress import Report
from ..sae import Sae
from .data import LabData
from .fit import evaluate_fit, fit_sae

SWEEPABLE = {"k": int, "l1_coeff": float, "expansion": int}
"""What a sweep may change, with its type (TrainConfig fields)."""

RECIPES = ("TopK", "TopK + AuxK", "TopK + k schedule", "ReLU + L1", "ReLU + L1 + ghost grads",
           "ReLU + L1 + resampling", "BatchTopK", "Matryoshka BatchTopK")
"""The recipes a comparison trains, on the same rows and token budget."""

RESAMPLINGS = 4
"""Dead-latent resamplings over one pass (Anthropic resampled a few times early in training)."""


def recipe_config(name: str, base: TrainConfig, n_rows: int) -> TrainConfig:
    """`base` turned into recipe `name`; `base` is TopK + AuxK (the default build's)."""
    topk = replace(base, architecture="topk")
    relu = replace(base, architecture="relu", auxk_alpha=0.0)
    steps = max(n_rows // base.batch_tokens, 1)
    configs = {
        "TopK": replace(topk, auxk_alpha=0.0),
        "TopK + AuxK": topk,
        # k starts 4x higher and anneals down: early steps give every latent a chance to fire
        "TopK + k schedule": replace(topk, k_start=4 * base.k),
        "ReLU + L1": relu,
        "ReLU + L1 + ghost grads": replace(relu, ghost_grads=True),
        "ReLU + L1 + resampling": replace(relu, resample_every=max(steps // (RESAMPLINGS + 1), 1)),
        "BatchTopK": replace(topk, architecture="batchtopk"),
        "Matryoshka BatchTopK": replace(topk, architecture="matryoshka"),
    }
    if name not in configs:
        raise ValueError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    return configs[name]


def score(sae: Sae, data: LabData, lm: LM | None = None) -> dict:
    """Held-out FVU, L0, dead share (and MMCS on synthetic data, CE loss recovered and KL on
    a model layer when `lm` is given)."""
    row = evaluate_fit(sae, data.test_ND, data.true_FD)
    if lm is not None and data.heldout_WL is not None:
        h = data.hookpoint
        ce = ce_losses(lm, {h: sae.to(lm.device)}, data.heldout_WL, {h: data.median_norm})[h]
        row |= {key: ce[key] for key in ("ce_recovered", "ce_recovered_se", "kl")}
    return row


def run_configs(data: LabData, configs: dict[str, TrainConfig], *, lm: LM | None = None,
                report: Report | None = None) -> list[dict]:
    """One row per labelled config: the fit's seconds and steps, then `score`."""
    rows = []
    for i, (label, cfg) in enumerate(configs.items()):
        if report:
            report(f"training {label} ({i + 1}/{len(configs)})", i / len(configs))
        fit = fit_sae(data.train_ND, cfg, seed=cfg.seed)
        rows.append({"label": label, "architecture": cfg.architecture, "k": cfg.k,
                     "expansion": cfg.expansion, "l1_coeff": cfg.l1_coeff,
                     "seconds": fit.seconds, "steps": fit.steps, **score(fit.sae, data, lm)})
    if report:
        report("done", 1.0)
    return rows


def sweep(data: LabData, base: TrainConfig, param: str, values: list, *,
          lm: LM | None = None, report: Report | None = None) -> list[dict]:
    """`base` with `param` set to each of `values` (a TopK sweep over k, a ReLU one over the
    L1 coefficient, either over width)."""
    if param not in SWEEPABLE:
        raise ValueError(f"a sweep changes one of {', '.join(SWEEPABLE)}, not {param!r}")
    if param == "l1_coeff" and base.architecture == "topk":
        raise ValueError("the L1 coefficient does nothing to a TopK SAE: sweep k, or use "
                         "--arch relu")
    if not values or len(values) > 12:
        raise ValueError(f"give 1 to 12 values to sweep, got {len(values)}")
    cast = SWEEPABLE[param]
    configs = {f"{param}={v}": replace(base, **{param: cast(v)}) for v in values}
    rows = run_configs(data, configs, lm=lm, report=report)
    return [row | {"param": param, "value": cast(v)} for row, v in zip(rows, values, strict=True)]


def compare(data: LabData, base: TrainConfig, recipes: tuple[str, ...] = RECIPES, *,
            lm: LM | None = None, report: Report | None = None) -> list[dict]:
    """Every recipe on the same rows and token budget."""
    configs = {name: recipe_config(name, base, len(data.train_ND)) for name in recipes}
    return run_configs(data, configs, lm=lm, report=report)
