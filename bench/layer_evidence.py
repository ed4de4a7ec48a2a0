"""What each layer computes, against the controls a reviewer asks for (issue 29).

Reads four atlases of one recipe (same corpus, windows and training settings), building the
missing ones first with --build (`BUILDS`; the controls at every third layer):
`default` (the real model), `control-random-init` and `control-shuffled` (the same recipe
through a randomly initialised copy of the model, and through one whose every weight tensor
is permuted within itself: model_controls.py), `seed-1` (a second SAE seed). It prints, per
band of layers, each number with its 95% interval (a bootstrap over documents where the
number is read from documents, paired between atlases that read the same documents):
- accepted share (layer map) of the SAE features, of each matched control and of each
  control model's SAE features, with the basic interval (`basic`);
- probing balanced accuracy (k = 5 SAE latents and neurons) on documents the SAEs never
  trained on; names that detect their feature (held-out F1 >= 0.5); lineage's turnover
  (its interval over features: it reads weights, not documents);
- the second seed's spread of each per-layer number, and lineage's baseline: features with
  a partner above decoder cosine 0.7 in the other seed's SAE of the same layer;
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
from torch import Tensor

from sae_core.activations import layer_of
from sae_core.atlas import layout
from sae_core.atlas.layout import control_atlases, load_atlas, read_metrics, seed_atlases
from sae_core.explore.cross_seed import cross_seed_shares, next_layer_shares
from sae_core.explore.firings import MAP_TASKS
from sae_core.explore.layermap import (
    CRITERIA,
    KINDS,
    LayerMapData,
    draws_interval,
    read_layer_map,
)
from sae_core.explore.lineage import read_lineage
from sae_core.explore.names import read_names, share_detected
from sae_core.explore.probing import ProbingResult, mean_over_tasks, method_name, read_probing
from sae_core.stats import Interval, percentile_interval
from sae_core.stats import share_interval as items_interval

THIRD = ["--layers", "0,3,6,9,12,15,18,21,24,27"]  # the controls: a third of the build time
BUILDS = {"default": [], "control-random-init": ["--control", "random-init", *THIRD],
          "control-shuffled": ["--control", "shuffled", *THIRD], "seed-1": ["--seed", "1", *THIRD]}
BANDS = ((0, 9), (10, 19), (20, 29))
MODELS = {"random-init": "random-init model", "shuffled": "shuffled-weights model"}
"""The control models (model_controls.py) and their names in the output and RESULT."""


def build_missing(root: Path) -> None:
    for name, flags in BUILDS.items():
        if not layout.is_built(root / name):
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


def probe_draws(result: ProbingResult, kind: str, rows: list[str]) -> tuple[float, Tensor]:
    """(point, (B,) draws) of balanced accuracy at k = 5, the mean over the hookpoints
    `rows` of each layer's mean over tasks (ProbingResult.per_layer)."""
    at = [result.hookpoints.index(h) for h in rows]
    per_layer = result.per_layer(kind, 5, metric="bacc")
    draws_LB = mean_over_tasks(result.draws, method_name(kind, 5), "bacc", None)
    return mean(per_layer[i] for i in at), draws_LB[at].double().mean(0)


def probe_interval(a: tuple[float, Tensor], b: tuple[float, Tensor] | None = None
                   ) -> Interval:
    """a's point and draws (less b's, the same draws) as an Interval."""
    point, draws = a if b is None else (a[0] - b[0], a[1] - b[1])
    return Interval(point, *percentile_interval(draws))


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


def accept_section(real: LayerMapData, models: dict[str, LayerMapData | None]
                   ) -> dict[str, float]:
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
        for name, other in models.items():  # each control model's layers of the band
            shared = [i for i in rows
                      if other is not None and real.hookpoints[i] in other.hookpoints]
            if not shared:
                continue
            own = [other.hookpoints.index(real.hookpoints[i]) for i in shared]
            lines += [("sae, same layers", share_interval(real, "sae", shared), None),
                      (f"sae, {name}", share_interval(other, "sae", own),
                       share_interval(real, "sae", shared, (other, "sae"))
                       if paired(real, other) else None)]
        for kind, share, lead in lines:
            cells = [fmt(share), _ends(basic(share))]
            if lead is not None:
                cells += [fmt(lead), _ends(basic(lead))]
            print(f"{first:>3}-{last:<3} {kind:<26} " + " ".join(cells))
    every = list(range(len(real.hookpoints)))
    controls = {k: mean_share(real, k, every) for k in KINDS[1:]}
    strongest = max(controls, key=controls.get)
    print(f"strongest matched control over all layers: {strongest}")
    out = {"accept_real": mean_share(real, "sae", every)}
    for kind, name in MODELS.items():
        other = models.get(name)
        out[f"accept_{kind.replace('-init', '')}_model"] = (
            mean_share(other, "sae", list(range(len(other.hookpoints)))) if other
            else float("nan"))
    return out | {"accept_matched_control": controls[strongest]}


def probe_section(real: ProbingResult, models: dict[str, ProbingResult | None]
                  ) -> dict[str, float]:
    print("\nprobing balanced accuracy, k = 5, mean over layers of the tasks' means; [95% "
          "interval over held-out documents]; each control model against the real SAEs of "
          "its layers (paired where it probed the same documents)")
    print(f"{'band':>7} {'kind':<24} {'bacc':>24} {'SAE lead':>24}")
    for first, last in (*BANDS, (0, 29)):
        def within(result, first=first, last=last):
            return [h for h in result.hookpoints if first <= layer_of(h) <= last]
        rows = within(real)
        if not rows:
            continue
        s, n = probe_draws(real, "sae", rows), probe_draws(real, "neuron", rows)
        lines = [("sae", probe_interval(s), None),
                 ("neurons", probe_interval(n), probe_interval(s, n))]
        for name, other in models.items():
            theirs = within(other) if other is not None else []
            if theirs and set(theirs) <= set(rows):
                o = probe_draws(other, "sae", theirs)
                pair = other.documents == real.documents
                lines.append((f"sae, {name}", probe_interval(o),
                              probe_interval(probe_draws(real, "sae", theirs), o)
                              if pair else None))
        for kind, iv, lead in lines:
            cells = [fmt(iv, pct=False)] + ([fmt(lead, pct=False)] if lead else [])
            print(f"{first:>3}-{last:<3} {kind:<24} " + " ".join(f"{c:>24}" for c in cells))
    out = {"probe_bacc_real_k5": real.mean("sae", 5, "bacc")}
    for kind, name in MODELS.items():
        other = models.get(name)
        out[f"probe_bacc_{kind.replace('-init', '')}_model_k5"] = (
            other.mean("sae", 5, "bacc") if other else float("nan"))
    return out | {"probe_bacc_neuron_k5": real.mean("neuron", 5, "bacc")}


def names_and_turnover(real_dir: Path, model_dirs: dict[str, Path | None]) -> None:
    """Names that detect their feature (held-out F1 >= 0.5; interval over documents) and
    features carried on to the next layer (interval over features), per band, for the real
    and each control model."""
    print("\nper band: names with held-out F1 >= 0.5 (% of alive features) [95% over "
          "documents]; features with a partner above cosine 0.7 in the next layer (% of the "
          "band's alive features) [95% over features]")
    for label, folder in {"real": real_dir, **model_dirs}.items():
        names, lineage = read_names(folder), read_lineage(folder)
        if names is None or lineage is None:
            print(f"{label}: no names or lineage")
            continue
        for band in share_detected(names, bands=BANDS):
            at = [i for i, h in enumerate(lineage.hookpoints)
                  if band.first <= layer_of(h) <= band.last
                  and lineage.turnover_up[i] is not None]
            alive = sum(lineage.alive[i] for i in at)
            carried = sum(round(lineage.turnover_up[i] * lineage.alive[i]) for i in at)
            lo, hi = items_interval(carried, alive)
            iv = Interval(carried / alive if alive else float("nan"), lo, hi)
            named = Interval(band.share, band.lo, band.hi)  # a count over a bar: as `basic`
            print(f"{label:>22} {band.first:>2}-{band.last:<2} names {fmt(named)} basic "
                  f"{_ends(basic(named))} of {band.n_alive:,}   carried on {fmt(iv)}")


def seed_section(real_dir: Path, other_dir: Path) -> dict[str, float]:
    real_map, other_map = read_layer_map(real_dir), read_layer_map(other_dir)
    real_probe, other_probe = read_probing(real_dir), read_probing(other_dir)
    hooks = [h for h in other_map.hookpoints if h in real_map.hookpoints]
    print(f"\nsecond seed, {len(hooks)} layers: per layer, seed 0 | seed 1 "
          "(accepted share % and probing bacc k = 5, each with its document interval)")
    bacc = [dict(zip(p.hookpoints, zip(p.per_layer("sae", 5, metric="bacc"),
                                       p.bands("sae", 5, metric="bacc"), strict=True),
                     strict=True)) for p in (real_probe, other_probe)]
    d_accept, d_probe = [], []
    for h in hooks:
        a = share_interval(real_map, "sae", [real_map.hookpoints.index(h)])
        b = share_interval(other_map, "sae", [other_map.hookpoints.index(h)])
        (pa, ba), (pb, bb) = bacc[0][h], bacc[1][h]
        d_accept.append(abs(a.point - b.point))
        if pa is not None and pb is not None:  # None: no label with enough tokens
            d_probe.append(abs(pa - pb))
            print(f"{h:>10} {fmt(a)} | {fmt(b)}   bacc {fmt(Interval(pa, *ba), pct=False)} | "
                  f"{fmt(Interval(pb, *bb), pct=False)}")
    _, _, saes, _ = load_atlas(real_dir)
    _, _, other, _ = load_atlas(other_dir)
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
    parser.add_argument("--root", type=Path, default=ROOT / layout.ATLAS_ROOT)
    args = parser.parse_args()
    if args.build:
        build_missing(args.root)
    real_dir = args.root / "default"
    twins = control_atlases(real_dir)
    model_dirs = {name: twins.get(kind) for kind, name in MODELS.items()}
    seeds = seed_atlases(real_dir)
    print(f"real {real_dir}; control models {model_dirs}; seeds {sorted(seeds)}")
    result = accept_section(read_layer_map(real_dir),
                            {n: read_layer_map(d) for n, d in model_dirs.items()})
    result |= probe_section(read_probing(real_dir),
                            {n: read_probing(d) for n, d in model_dirs.items()})
    names_and_turnover(real_dir, model_dirs)
    if 1 in seeds:
        result |= seed_section(real_dir, seeds[1])
    ce = [m["ce_recovered_mean"] for m in read_metrics(real_dir).values()
          if m.get("ce_recovered_mean") is not None]
    result["ce_recovered_mean_ablation"] = mean(ce) if ce else float("nan")
    print("RESULT " + " ".join(f"{k}={v:.4f}" for k, v in result.items()))


if __name__ == "__main__":
    main()
