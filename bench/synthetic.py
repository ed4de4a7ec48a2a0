"""Synthetic superposition benchmark: does an SAE find features we planted?

Activations are drawn from a known dictionary (sae_core/lab/synthetic.py: 512 random unit
features in 64 dimensions, ~5 firing per row, power-law frequencies, correlated groups,
noise); the default recipe trains on one pass over them and is scored against the true
dictionary (MMCS, share recovered at |cos| > 0.9) and on held-out rows (FVU, L0, dead).
In the same run, a random dictionary of the same width gives the MMCS that means nothing.

The recipe is `TrainConfig()` scaled to the problem: the same architecture, expansion 8 (so
512 latents for 512 features), batch and lr; k keeps the default's share of active latents,
32 of 8 x 576 (SmolLM2's width), i.e. round(32 x 512 / 4608) = 4, one below the true L0.

    python bench/synthetic.py [--train 2000000] [--seeds 1] [--set k=8 --set lr=3e-3]

Ends with one line `RESULT mmcs=... recovered_09=... fvu=... dead=...` (mean over seeds).
About 2 minutes on one thread (see THREADS).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch
from common import ROOT  # noqa: F401  (puts the repo root on sys.path)

from sae_core.config import TrainConfig
from sae_core.lab.data import synthetic_data
from sae_core.lab.fit import evaluate_fit, fit_sae
from sae_core.lab.recovery import best_cosines, mmcs, random_dictionary, recovered
from sae_core.lab.synthetic import SyntheticConfig, feature_probs, synthetic_recipe

THREADS = 1
"""Default torch threads: the matrices are tiny, and with another process on the second
core 2 threads trained 7-14x slower than 1 (146 steps: 20-22 s against 1.5-3 s)."""


def overridden(cfg: TrainConfig, settings: list[str]) -> TrainConfig:
    """`--set name=value` pairs applied to the recipe (values as JSON, lists as tuples, else
    strings: `--set architecture=relu --set matryoshka_prefixes=[0.25,1]`)."""
    changes = {}
    for item in settings:
        name, _, raw = item.partition("=")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        changes[name] = tuple(value) if isinstance(value, list) else value
    return dataclasses.replace(cfg, **changes)


def by_frequency(true_FD: torch.Tensor, dec_SD: torch.Tensor, parts: int = 4) -> list[float]:
    """Share recovered (|cos| > 0.9) in each frequency band, commonest features first (the
    features are numbered by decreasing frequency)."""
    hit_F = (best_cosines(true_FD, dec_SD) > 0.9).double()
    return [float(band.mean()) for band in hit_F.tensor_split(parts)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=2_000_000, help="training rows")
    parser.add_argument("--test", type=int, default=100_000, help="held-out rows")
    parser.add_argument("--seeds", type=int, default=3, help="SAEs trained (init and order)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="change a TrainConfig field of the recipe (repeatable)")
    parser.add_argument("--threads", type=int, default=THREADS, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    syn = SyntheticConfig()
    cfg = overridden(synthetic_recipe(syn), args.set)
    t0 = time.perf_counter()
    data = synthetic_data(syn, args.train, args.test)
    train_ND, test_ND, true_FD = data.train_ND, data.test_ND, data.true_FD
    print(f"data: {syn}\n  {args.train:,} train / {args.test:,} held-out rows in "
          f"{time.perf_counter() - t0:.1f} s; true L0 {float(feature_probs(syn).sum()):.2f}; "
          f"{torch.get_num_threads()} torch threads")
    print(f"recipe: {cfg.architecture}, {cfg.sae_width(syn.d)} latents, k {cfg.k}, batch "
          f"{cfg.batch_tokens}, lr {cfg.lr:g}" + (f" ({', '.join(args.set)})" if args.set else ""))
    rows = [_fit_row(train_ND, test_ND, true_FD, cfg, seed) for seed in range(args.seeds)]
    _print_table(rows, true_FD, cfg.sae_width(syn.d))
    mean = {key: sum(r[key] for r in rows) / len(rows) for key in rows[0] if key != "bands"}
    print(f"RESULT mmcs={mean['mmcs']:.4f} recovered_09={mean['recovered_09']:.4f} "
          f"fvu={mean['fvu']:.4f} dead={mean['dead']:.4f}")


def _fit_row(train_ND, test_ND, true_FD, cfg: TrainConfig, seed: int) -> dict:
    fit = fit_sae(train_ND, cfg, seed=seed)
    row = evaluate_fit(fit.sae, test_ND, true_FD)
    print(f"  seed {seed}: {fit.steps} steps in {fit.seconds:.1f} s "
          f"({len(train_ND) / fit.seconds:,.0f} rows/s)")
    return row | {"bands": by_frequency(true_FD, fit.sae.W_dec)}


def _print_table(rows: list[dict], true_FD: torch.Tensor, width: int) -> None:
    rand_SD = random_dictionary(width, true_FD.shape[1], seed=12345)
    rand_mmcs = mmcs(true_FD, rand_SD)
    print(f"{'':18}{'mmcs':>7}{'rec_0.9':>9}{'fvu':>8}{'l0':>7}{'dead':>7}  rec_0.9 by frequency")
    for seed, r in enumerate(rows):
        bands = " ".join(f"{b:.2f}" for b in r["bands"])
        print(f"{'SAE seed ' + str(seed):18}{r['mmcs']:7.3f}{r['recovered_09']:9.3f}"
              f"{r['fvu']:8.3f}{r['l0']:7.2f}{r['dead']:7.3f}  {bands} (commonest first)")
    print(f"{'random dictionary':18}{rand_mmcs:7.3f}{recovered(true_FD, rand_SD):9.3f}"
          f"{'':22}  same width, unit rows")
    sae_mmcs = [r["mmcs"] for r in rows]
    print(f"SAE MMCS / random MMCS: {sum(sae_mmcs) / len(rows) / rand_mmcs:.2f}; SAE MMCS over "
          f"{len(rows)} seeds {min(sae_mmcs):.3f}-{max(sae_mmcs):.3f}")


if __name__ == "__main__":
    main()
