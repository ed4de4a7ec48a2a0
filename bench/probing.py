"""k-sparse probing on the default atlas: how well k SAE latents, k raw neurons and the
whole residual read each token label, per layer; with the rest of the layer evidence that
the same pass feeds (feature names, lineage), timed.

Probing learns and is scored on the corpus documents the SAEs never trained on
(explore/unseen.py; its own pass, unseen_s); names and lineage read the labelled pass, as the
layer map does. Times (1) the pass over the labelled tokens (pass_s, shared with the layer
map) and (2) the probing itself from the unseen documents' firings (seconds), then names and
lineage from the labelled firings (names_s, lineage_s; added_s = the three together). Prints
mean held-out F1, balanced accuracy and AUROC per layer and task and per band of layers, the
share of alive features whose name detects them with held-out F1 >= 0.5 per band of layers,
the share kept in the next layer (decoder cosine > 0.7) per layer, then one RESULT line
(probe means over layers and tasks). --save writes the probing result into the atlas.

    python bench/probing.py [--layers 5,15,25] [--atlas checkpoints/atlas/default] [--save]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import ROOT, load_lm, load_texts

from sae_core.atlas.layout import DEFAULT_ATLAS, LABELS_STEM, PROBING_FILE, load_atlas
from sae_core.atlas.writing import atlas_lock
from sae_core.explore.firings import LABEL_DOC_STRIDE, collect_firings
from sae_core.explore.labels import load_or_build_labels
from sae_core.explore.lineage import compute_lineage
from sae_core.explore.names import LAYER_BANDS, compute_names, share_detected
from sae_core.explore.probing import ProbingResult, compute_probing
from sae_core.explore.unseen import unseen_pass
from sae_core.norms import medians_of

COLUMNS = ("sae_k1", "sae_k5", "sae_k20", "neuron_k5", "dense")
METRICS = (("f1", "F1"), ("bacc", "balanced accuracy"), ("auroc", "AUROC"))


def print_tables(result: ProbingResult) -> None:
    """Per layer and task, each metric's mean over the task's labels."""
    for metric, title in METRICS:
        print(f"mean held-out {title} over each task's labels")
        print(f"{'layer':>5} {'task':<6} {'labels':>6} " + " ".join(f"{c:>9}" for c in COLUMNS))
        suffix = "" if metric == "f1" else f"_{metric}"
        for row in result.table():
            cells = " ".join("      n/a" if row.get(c + suffix) is None
                             else f"{row[c + suffix]:9.3f}" for c in COLUMNS)
            print(f"{row['layer']:>5} {row['task']:<6} {row['labels']:>6} {cells}")


def print_names_and_lineage(names, lineage) -> None:
    """Names' detection per band of layers; lineage's turnover per layer."""
    for band in share_detected(names):
        print(f"names, layers {band.first}-{band.last}: {100 * band.share:.1f}% of "
              f"{band.n_alive:,} alive features have held-out F1 >= 0.5")
    turnover = lineage.turnover()
    print("layer  kept in the next layer (%)  close partner in the layer below (%)")
    for h, up, down in zip(lineage.hookpoints, turnover["up"], turnover["down"], strict=True):
        cells = [" n/a" if v is None else f"{100 * v:5.1f}" for v in (up, down)]
        print(f"{h.split('.')[1]:>5} {cells[0]:>27} {cells[1]:>37}")


def print_bands(result: ProbingResult) -> None:
    """Mean over the layers of each band (of each layer's mean over tasks) per metric."""
    print(f"{'band':>7} {'metric':<6} " + " ".join(f"{c:>9}" for c in COLUMNS))
    for first, last in LAYER_BANDS:
        for metric, _ in METRICS:
            cells = []
            for col in COLUMNS:
                kind, _, k = col.partition("_k")
                per = result.per_layer(kind, int(k) if k else None, metric=metric)
                vals = [v for h, v in zip(result.hookpoints, per, strict=True)
                        if v is not None and first <= int(h.split(".")[1]) <= last]
                cells.append(f"{sum(vals) / len(vals):9.3f}" if vals else "      n/a")
            print(f"{first:>3}-{last:<3} {metric:<6} " + " ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="", help="comma-separated layer numbers (all)")
    parser.add_argument("--atlas", default=str(ROOT / DEFAULT_ATLAS))
    parser.add_argument("--save", action="store_true",
                        help="write the probing result into the atlas (all layers only)")
    args = parser.parse_args()
    info, _, saes, fingerprint = load_atlas(args.atlas)
    if args.layers:
        wanted = {f"layers.{n}" for n in args.layers.split(",")}
        saes = {h: s for h, s in saes.items() if h in wanted}
    lm = load_lm()
    texts = load_texts(info.corpus)[::LABEL_DOC_STRIDE]
    data = load_or_build_labels(lm.tokenizer, texts, info.seq_len, Path(args.atlas) / LABELS_STEM)

    t0 = time.perf_counter()
    firings = collect_firings(lm, saes, medians_of(saes), data,
                              outlier_factor=info.outlier_factor)
    pass_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    seen = unseen_pass(lm, saes, info, load_texts(info.corpus),
                       cache=str(Path(args.atlas) / "labels_unseen"))
    unseen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = compute_probing(seen.firings, seen.vocab, documents={
        "unseen_by_saes": True, "documents": len(seen.documents), "tokens": seen.tokens},
        sae_fingerprint=fingerprint)
    seconds = time.perf_counter() - t0
    if args.save and not args.layers:
        with atlas_lock(Path(args.atlas)):
            result.save(Path(args.atlas) / PROBING_FILE)

    t0 = time.perf_counter()
    names = compute_names(lm, saes, firings, data.vocab)
    names_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    lineage = compute_lineage(saes, firings)
    lineage_s = time.perf_counter() - t0

    first = next(iter(seen.firings.values()))
    print(f"{len(seen.firings)} layers; probing on {len(seen.documents)} documents the SAEs "
          f"never trained on ({seen.tokens:,} tokens): {int((~first.heldout_N).sum()):,} learn "
          f"and {int(first.heldout_N.sum()):,} held-out tokens kept; pass_s {pass_s:.1f} s, "
          f"unseen_s {unseen_s:.1f} s, probing {seconds:.1f} s")
    print_tables(result)
    print_bands(result)
    print_names_and_lineage(names, lineage)
    print(f"names {names_s:.1f} s, lineage {lineage_s:.1f} s")
    print(f"RESULT probe_f1_sae_k1={result.mean('sae', 1):.4f} "
          f"probe_f1_sae_k5={result.mean('sae', 5):.4f} "
          f"probe_f1_neuron_k5={result.mean('neuron', 5):.4f} "
          f"probe_f1_dense={result.mean('dense'):.4f} "
          f"probe_bacc_sae_k5={result.mean('sae', 5, 'bacc'):.4f} "
          f"probe_bacc_neuron_k5={result.mean('neuron', 5, 'bacc'):.4f} "
          f"probe_auroc_sae_k5={result.mean('sae', 5, 'auroc'):.4f} "
          f"probe_auroc_neuron_k5={result.mean('neuron', 5, 'auroc'):.4f} "
          f"probe_documents={len(seen.documents)} seconds={seconds:.1f} unseen_s={unseen_s:.1f} "
          f"pass_s={pass_s:.1f} names_s={names_s:.1f} lineage_s={lineage_s:.1f} "
          f"added_s={seconds + names_s + lineage_s:.1f}")


if __name__ == "__main__":
    main()
