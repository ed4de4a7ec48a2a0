"""What each layer computes, against the controls a reviewer asks for (issue 29).

Reads three atlases of one recipe (same corpus, windows and training settings), building the
missing ones first with --build (about 40 minutes each on 2 cores):
  default              the real model, SAE seed 0 (`python -m sae_core train`)
  control-random-init  the same recipe through a randomly initialised copy of the model
                       (`--control random-init`)
  seed-1               a second SAE seed of every third layer (`--seed 1 --layers 0,3,...`)
and prints, per band of layers and over all layers, each number with its 95% interval:
- accepted share (layer map, default criteria) of the SAE features, of each matched control
  (neurons, random and whitened random directions fired on as many tokens as their SAE
  feature, a random dictionary through TopK) and of the random model's SAE features; the
  intervals are a bootstrap over corpus documents (the map's stored draws). The real and the
  random model's maps label the same documents, so their draws pair and the difference has
  its own interval.
- probing balanced accuracy (k = 5 SAE latents, k = 5 neurons), learned and scored on
  documents the SAEs never trained on; the interval is a bootstrap over the probed labels
  (per-label scores are what the result keeps), paired by label for differences.
- the spread between the two seeds of every per-layer number, beside the document interval.
- lineage: the share of a layer's features with a partner above decoder cosine 0.7 in the
  other seed's SAE of the same layer (the baseline), and in the next layer of the same seed.
- CE loss recovered against mean ablation (metrics.json).

    python bench/layer_evidence.py [--build]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from statistics import mean

import torch
from common import ROOT

from sae_core.activations import layer_of
from sae_core.atlas.layout import (
    ATLAS_ROOT,
    control_atlases,
    is_built,
    load_atlas,
    read_metrics,
    seed_atlases,
)
from sae_core.explore.cross_seed import cross_seed_shares, next_layer_shares
from sae_core.explore.firings import MAP_TASKS
from sae_core.explore.layermap import CRITERIA, KINDS, LayerMapData, read_layer_map
from sae_core.explore.lineage import read_lineage
from sae_core.explore.map_intervals import draws_interval
from sae_core.explore.names import read_names
from sae_core.explore.names_draws import share_detected
from sae_core.explore.probing import ProbingResult, method_name, read_probing
from sae_core.stats import Interval, bootstrap_interval

REAL, RANDOM, SEED1 = "default", "control-random-init", "seed-1"
SEED1_LAYERS = "0,3,6,9,12,15,18,21,24,27"
"""The controls' layers: every third (the random model's and the second seed's builds take
a third of the default's time)."""
BUILDS = {REAL: [], RANDOM: ["--control", "random-init", "--layers", SEED1_LAYERS],
          SEED1: ["--seed", "1", "--layers", SEED1_LAYERS]}
BANDS = ((0, 9), (10, 19), (20, 29))


def build_missing(root: Path) -> None:
    for name, flags in BUILDS.items():
        if not is_built(root / name):
            print(f"building {name} ...", flush=True)
            subprocess.run([sys.executable, "-m", "sae_core", "train", "--out",
                            str(root / name), *flags], check=True, cwd=ROOT)


def mean_share(lmap: LayerMapData, kind: str, rows: list[int]) -> float:
    """Accepted share at the default criteria, over tasks and the layers `rows`."""
    thr, support, lift = CRITERIA
    per_task = [lmap.accept_share(t, thr, support, kind, lift) for t in MAP_TASKS]
    return mean(mean(shares[i] for i in rows) for shares in per_task)


def task_draws(lmap: LayerMapData, kind: str) -> torch.Tensor:
    """(n_layers, n_boot): the accepted share per document draw, averaged over tasks."""
    return torch.stack([lmap.draws[f"{kind}/{t}"].double() for t in MAP_TASKS]).mean(dim=0)


def share_interval(lmap: LayerMapData, kind: str, rows: list[int],
                   minus: tuple[LayerMapData, str] | None = None) -> Interval:
    """The accepted share over the layers `rows` of `lmap` (less `minus`'s, a map and kind,
    at the same hookpoints) with its interval from the same document draws."""
    point, other = mean_share(lmap, kind, rows), None
    if minus:
        their = [minus[0].hookpoints.index(lmap.hookpoints[i]) for i in rows]
        point -= mean_share(*minus, their)
        other = task_draws(*minus)[their]
    lo, hi = draws_interval(task_draws(lmap, kind)[rows], list(range(len(rows))), other)
    return Interval(point, lo, hi)


def probe_cells(result: ProbingResult, kind: str) -> dict:
    """(hookpoint, task, label) -> balanced accuracy of the k = 5 probe."""
    method = method_name(kind, 5)
    return {(h, t, label): score
            for h, layer in zip(result.hookpoints, result.layers, strict=True)
            for t, tp in layer.items()
            for label, score in zip(tp.labels, tp.bacc.get(method, []), strict=False)}


def probe_interval(a: dict, b: dict | None = None) -> Interval:
    """Mean over labels (less `b`'s on the same labels), bootstrap over labels."""
    keys = sorted(a.keys() & b.keys()) if b is not None else sorted(a)
    diffs = [a[k] - (b[k] if b is not None else 0.0) for k in keys]
    return bootstrap_interval(diffs, lambda d: sum(d) / len(d))


def fmt(iv: Interval, pct: bool = True) -> str:
    s = 100 if pct else 1
    return f"{s * iv.point:6.2f} [{s * iv.lo:6.2f}, {s * iv.hi:6.2f}]"


def _ends(iv: Interval) -> str:
    return f"[{100 * iv.lo:6.2f}, {100 * iv.hi:6.2f}]"


def basic(iv: Interval) -> Interval:
    """The basic (reverse percentile) bootstrap interval, 2 x point - the percentile ends:
    an accepted share is a count over thresholds, and resampled documents push more
    features over them (the draws' mean sits above the point), which shifts the percentile
    interval up; the basic interval takes that shift off."""
    return Interval(iv.point, 2 * iv.point - iv.hi, 2 * iv.point - iv.lo)


def layer_rows(lmap: LayerMapData, first: int, last: int) -> list[int]:
    return [i for i, h in enumerate(lmap.hookpoints) if first <= layer_of(h) <= last]


def paired(a: LayerMapData, b: LayerMapData) -> bool:
    """Whether two maps' document draws are the same draws (same tokens, documents, seed)."""
    setting = [{k: m.intervals["setting"][k] for k in ("documents", "seed", "draws")}
               for m in (a, b)]
    return a.n_tokens == b.n_tokens and setting[0] == setting[1]


def accept_section(real: LayerMapData, rand: LayerMapData | None) -> dict[str, float]:
    print("\naccepted share (%), mean over tasks, default criteria; [95% percentile interval "
          "over documents] and the basic interval (`basic`)")
    print(f"{'band':>7} {'kind':<26} {'share':>24} {'basic':>16} {'SAE lead':>24} "
          f"{'basic':>16}")
    for first, last in (*BANDS, (0, 29)):
        rows = layer_rows(real, first, last)
        if not rows:
            continue
        lines = [(kind, share_interval(real, kind, rows),
                  None if kind == "sae" else share_interval(real, "sae", rows, (real, kind)))
                 for kind in KINDS]
        shared = [i for i in rows if rand is not None and real.hookpoints[i] in rand.hookpoints]
        if shared:  # the random model's layers of the band, against the same real layers
            own = [rand.hookpoints.index(real.hookpoints[i]) for i in shared]
            lines += [("sae, same layers", share_interval(real, "sae", shared), None),
                      ("sae, random-init model", share_interval(rand, "sae", own),
                       share_interval(real, "sae", shared, (rand, "sae"))
                       if paired(real, rand) else None)]
        for kind, share, lead in lines:
            cells = [fmt(share), _ends(basic(share))]
            if lead is not None:
                cells += [fmt(lead), _ends(basic(lead))]
            print(f"{first:>3}-{last:<3} {kind:<26} " + " ".join(cells))
    every = list(range(len(real.hookpoints)))
    controls = {k: mean_share(real, k, every) for k in KINDS[1:]}
    strongest = max(controls, key=controls.get)
    print(f"strongest matched control over all layers: {strongest}")
    return {"accept_real": mean_share(real, "sae", every),
            "accept_random_model": mean_share(rand, "sae", list(range(len(rand.hookpoints))))
            if rand else float("nan"),
            "accept_matched_control": controls[strongest]}


def probe_section(real: ProbingResult, rand: ProbingResult | None) -> dict[str, float]:
    print("\nprobing balanced accuracy, k = 5, mean over labels; [95% interval over labels]")
    sae, neuron = probe_cells(real, "sae"), probe_cells(real, "neuron")
    ctrl = probe_cells(rand, "sae") if rand else None
    print(f"{'band':>7} {'SAE':>24} {'neurons':>24} {'SAE - neurons':>24} "
          f"{'random model SAE':>24} {'SAE - random model':>24}")
    for first, last in (*BANDS, (0, 29)):
        def part(cells, first=first, last=last):
            return {k: v for k, v in cells.items() if first <= layer_of(k[0]) <= last}
        s, n = part(sae), part(neuron)
        if not s:
            continue
        cells = [probe_interval(s), probe_interval(n), probe_interval(s, n)]
        if ctrl is not None:
            cells += [probe_interval(part(ctrl)), probe_interval(s, part(ctrl))]
        print(f"{first:>3}-{last:<3} " + " ".join(f"{fmt(c, pct=False):>24}" for c in cells))
    return {"probe_bacc_real_k5": real.mean("sae", 5, "bacc"),
            "probe_bacc_random_model_k5": rand.mean("sae", 5, "bacc") if rand else float("nan"),
            "probe_bacc_neuron_k5": real.mean("neuron", 5, "bacc")}


def names_and_turnover(real_dir: Path, rand_dir: Path | None) -> None:
    """Names that detect their feature (held-out F1 >= 0.5) and features carried on to the
    next layer, per band, for the real and the random model."""
    print("\nper band: names with held-out F1 >= 0.5 (% of alive features); features with a "
          "partner above cosine 0.7 in the next layer (%, mean over layers)")
    dirs = {"real": real_dir, "random-init model": rand_dir}
    for label, folder in dirs.items():
        names, lineage = read_names(folder), read_lineage(folder)
        if names is None or lineage is None:
            print(f"{label}: no names or lineage")
            continue
        up = dict(zip(lineage.hookpoints, lineage.turnover()["up"], strict=True))
        for band in share_detected(names, bands=BANDS):
            ups = [v for h, v in up.items()
                   if v is not None and band.first <= layer_of(h) <= band.last]
            carried = f"{100 * mean(ups):.2f}" if ups else "n/a"
            print(f"{label:>18} {band.first:>2}-{band.last:<2} names {100 * band.share:5.1f} "
                  f"of {band.n_alive:,}   carried on {carried}")


def seed_section(real_dir: Path, other_dir: Path) -> dict[str, float]:
    real_map, other_map = read_layer_map(real_dir), read_layer_map(other_dir)
    real_probe, other_probe = read_probing(real_dir), read_probing(other_dir)
    hooks = [h for h in other_map.hookpoints if h in real_map.hookpoints]
    print(f"\nsecond seed, {len(hooks)} layers: per layer, seed 0 | seed 1 "
          "(accepted share % with its document interval; probing bacc k = 5)")
    bacc = [dict(zip(p.hookpoints, p.per_layer("sae", 5, metric="bacc"), strict=True))
            for p in (real_probe, other_probe)]
    d_accept, d_probe = [], []
    for h in hooks:
        a = share_interval(real_map, "sae", [real_map.hookpoints.index(h)])
        b = share_interval(other_map, "sae", [other_map.hookpoints.index(h)])
        pa, pb = bacc[0][h], bacc[1][h]
        d_accept.append(abs(a.point - b.point))
        if pa is not None and pb is not None:  # None: no label with enough tokens
            d_probe.append(abs(pa - pb))
        print(f"{h:>10} {fmt(a)} | {fmt(b)}   bacc {pa} | {pb}")
    _, _, saes = load_atlas(real_dir)
    _, _, other = load_atlas(other_dir)
    cross = cross_seed_shares({h: saes[h] for h in hooks}, other)
    up = next_layer_shares(saes)
    print(f"{'layer':>10} {'partner in the other seed %':>28} {'partner in the next layer %':>28}")
    for h in hooks:
        nxt = up.get(h)
        print(f"{h:>10} {100 * cross[h]:28.1f} "
              f"{'n/a' if nxt is None else f'{100 * nxt:.1f}':>28}")
    ups = [up[h] for h in hooks if up.get(h) is not None]
    return {"seed_spread_accept": mean(d_accept),
            "seed_spread_probe": mean(d_probe) if d_probe else float("nan"),
            "lineage_cross_seed": mean(cross[h] for h in hooks),
            "lineage_next_layer": mean(ups)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", action="store_true", help="build the missing atlases")
    parser.add_argument("--root", type=Path, default=ROOT / ATLAS_ROOT)
    args = parser.parse_args()
    if args.build:
        build_missing(args.root)
    real_dir = args.root / REAL
    rand_dir = control_atlases(real_dir).get("random-init")
    seeds = seed_atlases(real_dir)
    print(f"real {real_dir}; random-init model {rand_dir}; seeds {sorted(seeds)}")
    result = accept_section(read_layer_map(real_dir), read_layer_map(rand_dir))
    result |= probe_section(read_probing(real_dir), read_probing(rand_dir))
    names_and_turnover(real_dir, rand_dir)
    if 1 in seeds:
        result |= seed_section(real_dir, seeds[1])
    ce = [m["ce_recovered_mean"] for m in read_metrics(real_dir).values()
          if m.get("ce_recovered_mean") is not None]
    result["ce_recovered_mean_ablation"] = mean(ce) if ce else float("nan")
    print("RESULT " + " ".join(f"{k}={v:.4f}" for k, v in result.items()))


if __name__ == "__main__":
    main()
