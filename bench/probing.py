"""k-sparse probing on the default atlas: how well k SAE latents, k raw neurons and the
whole residual read each token label, per layer.

Times (1) the pass that runs the model and every SAE over the labelled tokens (pass_s,
shared with the layer map) and (2) the probing itself from those firings (seconds). Prints
mean held-out F1 per layer and task, then one RESULT line (means over layers and tasks).

    python bench/probing.py [--layers 5,15,25] [--atlas checkpoints/atlas/default]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import ROOT, load_lm, load_texts

from sae_core.atlas.layout import DEFAULT_ATLAS, load_atlas
from sae_core.explore.labels import load_or_build_labels
from sae_core.explore.layermap import LABEL_DOC_STRIDE, collect_firings
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
    print(f"RESULT probe_f1_sae_k1={result.mean('sae', 1):.4f} "
          f"probe_f1_sae_k5={result.mean('sae', 5):.4f} "
          f"probe_f1_neuron_k5={result.mean('neuron', 5):.4f} "
          f"probe_f1_dense={result.mean('dense'):.4f} seconds={seconds:.1f}")


if __name__ == "__main__":
    main()
