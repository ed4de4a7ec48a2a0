"""One captured forward after training for everything read from the trained SAEs.

The pass reads the index's windows in order: the held-out windows, the labelled windows (every
8th document), then strided training windows (feature_index.index_windows). Each batch is
captured once and encoded once (encode.py); from it
- the held-out rows add to the reconstruction statistics of metrics.json (atlas/evaluate.py),
- the index rows give the feature index's codes (feature_index.py),
- the labelled rows give the firings of the layer evidence (firings.py: layer map, probing,
  names, lineage),
while spaCy labels the labelled documents in a thread (their labels join the firings at the
end, by token position). Every product is still written on its own and rebuilt alone by its
own `ensure_*`, which reads the same windows in the same batches: tests/explore/
test_one_pass.py checks that both give the same files.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from ..atlas.build import AfterTraining
from ..atlas.evaluate import add_reconstruction
from ..atlas.info import AtlasInfo
from ..atlas.layout import LABELS_STEM
from ..corpus import load_texts
from ..encode import BF16, LayerCodes, encode_acts
from ..hooks import run_captured
from ..lm import LM
from ..metrics import RunningFvu
from ..progress import Report
from ..sae import Sae
from ..transcoder import sites
from .evidence import PRODUCTS, QUICK_PRODUCTS, write_evidence
from .feature_index import IndexCodes, atlas_index_windows, write_feature_index
from .feature_stats import IndexConfig
from .firings import LABEL_DOC_STRIDE, FiringParts, LabelledPass, with_labels
from .labels import load_or_build_labels

QUICK_INDEX_TOKENS = 16_384
"""A quick atlas's feature index (jobs/stages.quick_job) reads this many tokens (the default
65,536)."""


class PassWindows(NamedTuple):
    windows_WL: Tensor
    """The index's windows: held-out, labelled, then strided training windows..."""
    labelled_WL: Tensor
    """... all labelled windows: the first of them are in `windows_WL`, after the held-out."""
    source: dict
    """How many of `windows_WL` are held-out, labelled, training (index.json)."""


class PassResult(NamedTuple):
    recon: dict[str, RunningFvu]
    """Held-out reconstruction per hookpoint."""
    codes: dict[str, tuple[Tensor, Tensor, int]]
    """The feature index's codes (feature_index.collect_codes)."""
    firings: FiringParts
    """The labelled windows' firings, without their labels."""


def _rows(codes: dict[str, LayerCodes], rows: slice) -> dict[str, LayerCodes]:
    return {h: LayerCodes(*(t[rows] for t in c)) for h, c in codes.items()}


@torch.inference_mode()
def run_pass(lm: LM, saes: dict[str, Sae], medians: dict[str, float], plan: PassWindows, *,
             outlier_factor: float, batch: int, with_firings: bool = True,
             report: Report | None = None) -> PassResult:
    """The one pass: the index windows in batches of `batch`, then (`with_firings`) the
    labelled windows the index had no room for (the same batches as each product's own
    pass)."""
    n_index, n_held = len(plan.windows_WL), plan.source["heldout_windows"]
    n_lab_in_index = plan.source["labelled_windows"]
    # pass order: index windows, then the labelled windows not in the index
    rest = plan.labelled_WL[n_lab_in_index:] if with_firings else plan.labelled_WL[:0]
    windows = torch.cat([plan.windows_WL, rest])
    lab_start = n_held  # where the labelled windows start in the pass
    lab_rows = (slice(lab_start, lab_start + n_lab_in_index), slice(n_index, len(windows)))
    recon = {h: RunningFvu() for h in saes}
    index, firings = IndexCodes(list(saes)), FiringParts(plan.labelled_WL.shape, saes)
    for start in range(0, len(windows), batch):
        stop = min(start + batch, len(windows))
        acts = run_captured(lm, windows[start:stop], sites(saes), bf16=BF16)
        if start < n_held:
            held = slice(0, min(stop, n_held) - start)
            add_reconstruction(recon, saes, {h: a[held] for h, a in acts.items()}, medians,
                               outlier_factor)
        codes = encode_acts(saes, acts, medians, outlier_factor=outlier_factor)
        if start < n_index:
            index.add(_rows(codes, slice(0, min(stop, n_index) - start)))
        for rows, first in zip(lab_rows, (0, n_lab_in_index), strict=True):
            lo, hi = max(start, rows.start), min(stop, rows.stop)
            if with_firings and lo < hi:
                part = slice(lo - start, hi - start)
                firings.add(first + lo - rows.start, windows[lo:hi], _rows(codes, part))
        if report:
            report(f"one pass after training: {stop * windows.shape[1]:,} tokens",
                   0.2 + 0.5 * stop / len(windows))
    return PassResult(recon, index.result(), firings)


def after_training(folder: Path, lm: LM, saes: dict[str, Sae], medians: dict[str, float],
                   info: AtlasInfo, report: Report | None = None, *, index: bool = True,
                   evidence: bool = True, quick: bool = False) -> dict[str, RunningFvu]:
    """Everything the build reads from its trained SAEs, from one pass (module doc): writes
    the feature index (`index`) and the layer evidence (`evidence`) to `folder` (the build's
    staging folder, which it holds); returns the held-out reconstruction for metrics.json.
    `info`: the atlas.json being written (corpus, seq_len, heldout_ids, train_cfg,
    sae_fingerprint). `quick`: a first-round atlas (jobs/stages.quick_job): a smaller index and the
    layer map alone, without intervals."""
    cfg = IndexConfig(max_tokens=QUICK_INDEX_TOKENS) if quick else IndexConfig()
    texts = load_texts(info.corpus)
    plan = PassWindows(*atlas_index_windows(lm, texts, info, cfg.max_tokens))
    if not index:  # the held-out and labelled windows only
        plan = plan._replace(windows_WL=plan.windows_WL[
            :plan.source["heldout_windows"] + plan.source["labelled_windows"]])
    t0 = time.perf_counter()
    with ThreadPoolExecutor(1) as pool:  # spaCy labels while the model runs
        labels = pool.submit(load_or_build_labels, lm.tokenizer, texts[::LABEL_DOC_STRIDE],
                             info.seq_len, folder / LABELS_STEM) if evidence else None
        result = run_pass(lm, saes, medians, plan, outlier_factor=info.outlier_factor,
                          batch=cfg.batch, with_firings=evidence, report=report)
        data = labels.result() if labels else None
    if index:
        write_feature_index(folder, result.codes, plan.windows_WL, saes, cfg=cfg,
                            source=plan.source, fingerprint=info.sae_fingerprint,
                            pass_s=time.perf_counter() - t0)
    if data is not None:
        if not torch.equal(data.windows, plan.labelled_WL):
            raise RuntimeError("the labelled windows differ from the corpus windows they label")
        firings = with_labels(result.firings.firings(), data.labels)
        write_evidence(folder, LabelledPass(info, lm, saes, data.vocab, firings,
                                            info.sae_fingerprint, medians),
                       QUICK_PRODUCTS if quick else PRODUCTS, report=report)
    return result.recon


def after_training_for(parts: tuple[str, ...], quick: bool = False) -> AfterTraining | None:
    """The pass after training that writes what a build job asks for (its `parts`: "feature
    index", "layer map"; `quick`: as after_training); None when it asks for neither (the
    evaluation reads alone)."""
    index, evidence = "feature index" in parts, "layer map" in parts
    if not (index or evidence):
        return None
    return partial(after_training, index=index, evidence=evidence, quick=quick)
