"""What each layer computes, with evidence: the layer map, sparse probing, feature names and
lineage, all from one pass of the SAEs over the labelled tokens (firings.py).

Each product is its own file in the atlas folder, keyed by the SAEs' fingerprint, and can be
rebuilt alone; `ensure_layer_evidence` computes those missing, stale or damaged with one pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

from ..atlas.layout import LAYER_MAP_FILE, LINEAGE_FILE, NAMES_FILE, PROBING_FILE
from ..atlas.writing import atlas_lock
from ..atomic import CorruptFile
from ..lm import LM
from ..progress import Report
from .firings import LabelledPass, labelled_pass
from .layermap import centres_of, counts_from_firings, read_layer_map
from .lineage import compute_lineage, read_lineage
from .names import compute_names, read_names
from .probing import probe_unseen, read_probing

log = logging.getLogger(__name__)


class Evidence(NamedTuple):
    name: str
    file: str
    """Where the product's `save` writes, in the atlas folder."""
    read: Callable[[Path], object | None]
    """The current product, None when missing or computed from other SAEs."""
    compute: Callable[[LabelledPass], object]


PRODUCTS = (
    Evidence("layer map", LAYER_MAP_FILE, read_layer_map,
             lambda run: counts_from_firings(run.firings, run.vocab, centres_of(run.saes))),
    # probes learn and are scored on the documents the SAEs never trained on: one more pass
    Evidence("probing", PROBING_FILE, read_probing, probe_unseen),
    Evidence("names", NAMES_FILE, read_names,
             lambda run: compute_names(run.lm, run.saes, run.firings, run.vocab)),
    Evidence("lineage", LINEAGE_FILE, read_lineage,
             lambda run: compute_lineage(run.saes, run.firings)),
)


QUICK_PRODUCTS = (
    Evidence("layer map", LAYER_MAP_FILE, read_layer_map,
             lambda run: counts_from_firings(run.firings, run.vocab, centres_of(run.saes),
                                             n_boot=0)),
)
"""A quick atlas's evidence (jobs/stages.quick_job): the layer map alone, without its
intervals."""


def _current(product: Evidence, folder: Path) -> bool:
    try:
        return product.read(folder) is not None
    except CorruptFile as err:  # damaged: reported, then computed again
        log.warning("%s", err)
        return False


def missing_evidence(folder: Path | str) -> list[str]:
    """Names of the products not on disk, stale or damaged."""
    return [p.name for p in PRODUCTS if not _current(p, Path(folder))]


def has_layer_evidence(folder: Path | str) -> bool:
    return not missing_evidence(folder)


def ensure_layer_evidence(folder: Path | str, *, lm: LM | None = None,
                          report: Report | None = None) -> dict[str, float]:
    """Compute and write every missing product from one labelled pass; returns the seconds
    each took (the pass under "pass"), empty when all were current."""
    folder = Path(folder)
    todo = [p for p in PRODUCTS if not _current(p, folder)]
    if not todo:
        return {}
    t0 = time.perf_counter()
    run = labelled_pass(folder, lm, report)
    seconds = {"pass": time.perf_counter() - t0}
    return seconds | write_evidence(folder, run, todo, report,
                                    lock=lambda: atlas_lock(folder))


def write_evidence(folder: Path, run: LabelledPass, todo: Sequence[Evidence] = PRODUCTS,
                   report: Report | None = None,
                   lock: Callable[[], AbstractContextManager] = nullcontext) -> dict[str, float]:
    """Compute each product of `todo` from `run` and write it to `folder`, each under
    `lock()` (the folder's write lock; none for a build's staging folder, which the build
    holds); returns the seconds each took."""
    seconds = {}
    for i, product in enumerate(todo):
        if report:
            report(f"{product.name} from the labelled tokens", 0.6 + 0.4 * i / len(todo))
        t0 = time.perf_counter()
        # every product is a dataclass that names the SAEs it was computed from
        result = replace(product.compute(run), sae_fingerprint=run.fingerprint)
        with lock():
            result.save(folder / product.file)
        seconds[product.name] = time.perf_counter() - t0
    log.info("layer evidence of %s: %s", folder,
             ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    return seconds
