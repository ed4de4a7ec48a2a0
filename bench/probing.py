"""k-sparse probing on the default atlas: how well k SAE latents, k raw neurons and the
whole residual read each token label, per layer; with the rest of the layer evidence that
the same pass feeds (feature names, lineage), timed.

Times (1) the pass that runs the model and every SAE over the labelled tokens (pass_s,
shared with the layer map) and (2) the probing itself from those firings (seconds), then
names and lineage from the same firings (names_s, lineage_s; added_s = the three together,
what they add to a build). Prints mean held-out F1 per layer and task, the share of alive
features whose name detects them with held-out F1 >= 0.5 per band of layers, the share kept
in the next layer (decoder cosine > 0.7) per layer, then one RESULT line (probe means over
layers and tasks).

    python bench/probing.py [--layers 5,15,25] [--atlas checkpoints/atlas/default]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import ROOT, load_lm, load_texts

from sae_core.atlas.layout import DEFAULT_ATLAS, load_atlas
from sae_core.explore.firings import LABEL_DOC_STRIDE, collect_firings
from sae_core.explore.labels import load_or_build_labels
from sae_core.explore.lineage import compute_lineage
from sae_core.explore.names import compute_names, share_detected
from sae_core.explore.probing import compute_probing
from sae_core.norms import medians_of

COLUMNS = ("sae_k1", "sae_k5", "sae_k20", "neuron_k5", "dense")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="", help="comma-separated layer numbers (all)")
    parser.add_argument("--atlas", default=str(ROOT / DEFAULT_ATLAS))
    args = parser.parse_args()
    info, _, saes = load_atlas(args.atlas)
    if args.layers:
        wanted = {f"layers.{n}" for n in args.layers.split(",")}
        saes = {h: s for h, s in saes.items() if h in wanted}
    lm = load_lm()
    texts = load_texts(info["corpus"])[::LABEL_DOC_STRIDE]
    data = load_or_build_labels(lm.tokenizer, texts, info["seq_len"], Path(args.atlas) / "labels")

    t0 = time.perf_counter()
    firings = collect_firings(lm, saes, medians_of(saes), data,
                              outlier_factor=info["train_cfg"]["outlier_factor"])
    pass_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    result = compute_probing(firings, data.vocab)
    seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    names = compute_names(lm, saes, firings, data.vocab)
    names_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    lineage = compute_lineage(saes, firings)
    lineage_s = time.perf_counter() - t0

    first = next(iter(firings.values()))
    print(f"{len(firings)} layers, {int((~first.heldout_N).sum()):,} learn and "
          f"{int(first.heldout_N.sum()):,} held-out tokens; pass_s {pass_s:.1f} s, "
          f"probing {seconds:.1f} s")
    print("mean held-out F1 over each task's labels")
    print(f"{'layer':>5} {'task':<6} {'labels':>6} " + " ".join(f"{c:>9}" for c in COLUMNS))
    for row in result.table():
        cells = " ".join("      n/a" if row.get(c) is None else f"{row[c]:9.3f}"
                         for c in COLUMNS)
        print(f"{row['layer']:>5} {row['task']:<6} {row['labels']:>6} {cells}")
    for band in share_detected(names):
        print(f"names, layers {band.first}-{band.last}: {100 * band.share:.1f}% of "
              f"{band.n_alive:,} alive features have held-out F1 >= 0.5")
    turnover = lineage.turnover()
    print("layer  kept in the next layer (%)  close partner in the layer below (%)")
    for h, up, down in zip(lineage.hookpoints, turnover["up"], turnover["down"], strict=True):
        cells = [" n/a" if v is None else f"{100 * v:5.1f}" for v in (up, down)]
        print(f"{h.split('.')[1]:>5} {cells[0]:>27} {cells[1]:>37}")
    print(f"names {names_s:.1f} s, lineage {lineage_s:.1f} s")
    print(f"RESULT probe_f1_sae_k1={result.mean('sae', 1):.4f} "
          f"probe_f1_sae_k5={result.mean('sae', 5):.4f} "
          f"probe_f1_neuron_k5={result.mean('neuron', 5):.4f} "
          f"probe_f1_dense={result.mean('dense'):.4f} seconds={seconds:.1f} "
          f"pass_s={pass_s:.1f} names_s={names_s:.1f} lineage_s={lineage_s:.1f} "
          f"added_s={seconds + names_s + lineage_s:.1f}")


if __name__ == "__main__":
    main()
