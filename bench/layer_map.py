"""Layer map timing and the SAE-vs-controls comparison on the default atlas.

Times (1) the pass that runs the model and every SAE over the labelled tokens and
(2) the map itself from those firings: label counts for 30 layers x 4 tasks for SAE features
and the four controls (raw neurons, random directions, random directions in whitened
space, each matched to the SAE's support; a random dictionary through TopK), with the
bootstrap over documents of every accepted share, then per-feature stats and accepted
counts. Prints the share of accepted features per layer and, per band of 10 layers, each
kind's share with its 95% interval and the SAE's lead over each control with its interval
(the same document draws). `--stored` reads the atlas's stored map instead (no model).

    python bench/layer_map.py [--threshold 0.8 --min-support 20 --min-lift 2] [--stored]
"""

from __future__ import annotations

import argparse
import time

from common import ROOT, load_lm, load_texts

from sae_core.atlas.layout import DEFAULT_ATLAS, LABELS_STEM, load_atlas
from sae_core.explore.firings import LABEL_DOC_STRIDE
from sae_core.explore.labels import load_or_build_labels
from sae_core.explore.layermap import (
    CRITERIA,
    KINDS,
    MAP_TASKS,
    LayerMapData,
    centres_of,
    collect_firings,
    counts_from_firings,
    read_layer_map,
)
from sae_core.norms import medians_of


def band_table(lmap: LayerMapData) -> None:
    """Per band of 10 layers and task: each kind's mean share [95% interval], and the SAE's
    lead over each control [interval], in %, at the intervals' criteria."""
    if not lmap.draws:
        print("no intervals in this map")
        return
    print("band  task  " + " ".join(f"{k:>22}" for k in KINDS))
    for lo in range(0, len(lmap.hookpoints), 10):
        layers = list(range(lo, min(lo + 10, len(lmap.hookpoints))))
        for t in MAP_TASKS:
            cells = [lmap.band_interval(t, k, layers) for k in KINDS]
            print(f"{lo}-{layers[-1]:<3} {t:<5} " + " ".join(
                f"{100 * p:6.2f} [{100 * a:5.2f},{100 * b:5.2f}]" for p, a, b in cells))
            leads = [lmap.band_interval(t, "sae", layers, minus=k) for k in KINDS[1:]]
            print(f"{'':<5} {'lead':<5} {'':>22} " + " ".join(
                f"{100 * p:+6.2f} [{100 * a:+5.2f},{100 * b:+5.2f}]" for p, a, b in leads))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=CRITERIA.threshold)
    parser.add_argument("--min-support", type=int, default=CRITERIA.min_support)
    parser.add_argument("--min-lift", type=float, default=CRITERIA.min_lift)
    parser.add_argument("--stored", action="store_true", help="read the stored map")
    args = parser.parse_args()
    atlas = ROOT / DEFAULT_ATLAS
    if args.stored:
        lmap = read_layer_map(atlas)
        print(f"stored map: {lmap.n_tokens:,} tokens, intervals "
              f"{lmap.intervals.get('setting')}")
        band_table(lmap)
        return
    info, _, saes, _ = load_atlas(atlas)
    lm = load_lm()
    texts = load_texts(info.corpus)[::LABEL_DOC_STRIDE]
    t0 = time.perf_counter()
    data = load_or_build_labels(lm.tokenizer, texts, info.seq_len, atlas / LABELS_STEM)
    label_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    firings = collect_firings(lm, saes, medians_of(saes), data,
                              outlier_factor=info.outlier_factor)
    pass_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    lmap = counts_from_firings(firings, data.vocab, centres_of(saes))
    shares = {(kind, task): lmap.accept_share(task, args.threshold, args.min_support, kind,
                                              args.min_lift)
              for kind in KINDS for task in MAP_TASKS}
    map_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    for task in MAP_TASKS:
        lmap.heatmap(task, args.threshold + 0.05, args.min_support, "sae", args.min_lift)
    update_ms = 1000 * (time.perf_counter() - t0) / len(MAP_TASKS)

    print(f"{lmap.n_tokens:,} labelled tokens; labels {label_s:.1f} s (cached after the first "
          f"run), model+SAE pass {pass_s:.1f} s, map and intervals from firings {map_s:.2f} s, "
          f"heatmap update {update_ms:.1f} ms")
    print(f"accepted share (%), threshold {args.threshold}, support >= {args.min_support}, "
          f"lift >= {args.min_lift}")
    header = "layer " + " ".join(f"{k[:6]}:{t:<5}" for t in MAP_TASKS for k in KINDS)
    print(header)
    for i, h in enumerate(lmap.hookpoints):
        cells = " ".join(f"{100 * shares[(k, t)][i]:12.1f}" for t in MAP_TASKS for k in KINDS)
        print(f"{h.split('.')[1]:>5} {cells}")
    band_table(lmap)
    mean = {kind: sum(sum(shares[(kind, t)]) / len(lmap.hookpoints) for t in MAP_TASKS)
            / len(MAP_TASKS) for kind in KINDS}
    print(f"RESULT map_s={map_s:.3f} pass_s={pass_s:.1f} update_ms={update_ms:.1f} "
          + " ".join(f"{k}_accept={mean[k]:.4f}" for k in KINDS))


if __name__ == "__main__":
    main()
