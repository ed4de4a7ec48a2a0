"""The layer map: label counts per layer and task for SAE features and three controls.

For every hookpoint and labelling task we keep the (features, labels) count matrix of
firings, for four kinds of "features":
- `sae`: the SAE's latents, firing where their activation is > 0 (sae_core/encode.py);
- `neuron`, `random`, `whitened`: raw dimensions, random directions and random directions
  in whitened space, each firing on its top tokens (controls.py).
Controls fire at the SAE's measured mean rate, so support is comparable. Counts are
computed once (`ensure_layer_map`, stored in the atlas folder); thresholds are applied later
in milliseconds (`LayerMapData.heatmap`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..activations import OUTLIER_FACTOR
from ..atlas.layout import read_derived
from ..atlas.writing import atlas_lock
from ..atomic import CorruptFile, load_tensors, read_json, save_tensors, write_json
from ..lm import LM
from ..progress import Report
from ..sae import Sae
from .consistency import (
    FeatureStats,
    accepted,
    base_rates,
    feature_stats,
    label_counts,
    label_counts_topq,
    layer_map,
    topq_tokens,
)
from .controls import CONTROL_KINDS, control_activations
from .firings import MAP_TASKS, LayerFirings, collect_firings, labelled_pass
from .labels import LabelledWindows

log = logging.getLogger(__name__)
KINDS = ("sae", *CONTROL_KINDS)
MAP_FORMAT = 2
"""2: centred controls and the whitened control; a map of another format is rebuilt."""
LAYER_MAP_FILE = "layer_map.safetensors"
"""In the atlas folder, with layer_map.json (written last) and the labels cache labels.*."""


@dataclass
class LayerMapData:
    hookpoints: list[str]
    vocab: dict[str, list[str]]
    counts: dict[str, Tensor]
    """f"{kind}/{hookpoint}/{task}" -> (n_features, n_labels) firing counts."""
    base_rate: dict[str, Tensor]
    """task -> (n_labels,) share of the mapped tokens with each label."""
    n_tokens: int
    fire_rate: float
    """Mean SAE firing rate over layers (each layer's firings / (its tokens x its own d_sae));
    each layer's controls fire at that layer's rate."""
    _stats: dict[str, FeatureStats] = field(default_factory=dict, repr=False)
    sae_fingerprint: str = ""
    """Of the SAEs it was computed from (atlas/fingerprint.py): another atlas's is stale."""

    def stats(self, kind: str, hookpoint: str, task: str) -> FeatureStats:
        key = f"{kind}/{hookpoint}/{task}"
        if key not in self._stats:
            self._stats[key] = feature_stats(self.counts[key], self.base_rate[task])
        return self._stats[key]

    def heatmap(self, task: str, threshold: float, min_support: int, kind: str = "sae",
                min_lift: float = 0.0) -> Tensor:
        """(n_layers, n_labels) accepted features per layer and label."""
        n_labels = len(self.vocab[task])
        return torch.stack([
            layer_map(self.stats(kind, h, task), threshold, min_support, n_labels, min_lift)
            .n_accepted for h in self.hookpoints
        ])

    def accept_share(self, task: str, threshold: float, min_support: int, kind: str,
                     min_lift: float = 0.0) -> list[float]:
        """Per layer: share of all features accepted for some label."""
        n_labels = len(self.vocab[task])
        return [layer_map(self.stats(kind, h, task), threshold, min_support, n_labels, min_lift)
                .share_accepted for h in self.hookpoints]

    def cell_features(self, kind: str, hookpoint: str, task: str, label: str, threshold: float,
                      min_support: int, min_lift: float = 0.0) -> Tensor:
        """Ids of the accepted features whose `task` label is `label`, most consistent first
        (then most firings, then lowest id)."""
        if label not in self.vocab[task]:
            raise ValueError(f"unknown {task} label {label!r}")
        s = self.stats(kind, hookpoint, task)
        mask = (s.label == self.vocab[task].index(label))
        ids = (mask & accepted(s, threshold, min_support, min_lift)).nonzero().squeeze(1)
        ids = ids[s.support[ids].argsort(descending=True, stable=True)]
        return ids[s.consistency[ids].argsort(descending=True, stable=True)]

    def save(self, path: Path) -> None:
        """The counts, then the .json (the marker of a whole map), each written atomically."""
        path.with_suffix(".json").unlink(missing_ok=True)
        tensors = dict(self.counts) | {f"base_rate/{t}": r for t, r in self.base_rate.items()}
        save_tensors(path, tensors)
        meta = {"hookpoints": self.hookpoints, "vocab": self.vocab, "n_tokens": self.n_tokens,
                "fire_rate": self.fire_rate, "sae_fingerprint": self.sae_fingerprint,
                "format": MAP_FORMAT}
        write_json(path.with_suffix(".json"), meta, indent=None)

    @classmethod
    def load(cls, path: Path) -> LayerMapData:
        """CorruptFile when either file is truncated or damaged."""
        meta = read_json(path.with_suffix(".json"))
        tensors = load_tensors(path)
        base = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("base_rate/")}
        counts = {k: v for k, v in tensors.items() if not k.startswith("base_rate/")}
        # an older format reads as stale (no fingerprint matches), so it is rebuilt
        fingerprint = meta.get("sae_fingerprint", "") if meta.get("format") == MAP_FORMAT else ""
        return cls(meta["hookpoints"], meta["vocab"], counts, base, meta["n_tokens"],
                   meta["fire_rate"], sae_fingerprint=fingerprint)


def counts_from_firings(
    firings: dict[str, LayerFirings], vocab: dict[str, list[str]], centres: dict[str, Tensor],
    *, n_control: int | None = None, seed: int = 0,
) -> LayerMapData:
    """All label counts: SAE features and the controls (controls.py) read from `centres`
    (each SAE's b_dec), every layer."""
    n_labels = {t: len(vocab[t]) for t in MAP_TASKS}
    counts: dict[str, Tensor] = {}
    rates = []
    for i, (h, f) in enumerate(firings.items()):
        for t in MAP_TASKS:
            counts[f"sae/{h}/{t}"] = label_counts(f.idx_NK, f.labels[t], f.d_sae, n_labels[t],
                                                  valid_NK=f.valid_NK)
        # Each firing has one label, so a task's counts sum to the layer's firings.
        fire_rate = float(counts[f"sae/{h}/{MAP_TASKS[0]}"].sum()) / (len(f.x_ND) * f.d_sae)
        rates.append(fire_rate)
        n_dirs = n_control or 2 * f.x_ND.shape[1]
        controls = control_activations(f.x_ND, centres[h], n_dirs, seed=seed + i)
        for kind, acts_NF in controls.items():
            top_FM = topq_tokens(acts_NF, fire_rate)
            for t in MAP_TASKS:
                counts[f"{kind}/{h}/{t}"] = label_counts_topq(top_FM, f.labels[t], n_labels[t])
    first = next(iter(firings.values()))
    base = {t: base_rates(first.labels[t], n_labels[t]) for t in MAP_TASKS}
    return LayerMapData(list(firings), {t: vocab[t] for t in MAP_TASKS}, counts, base,
                        len(first.x_ND), sum(rates) / len(rates))


def compute_layer_map(
    lm: LM, saes: dict[str, Sae], medians: dict[str, float], data: LabelledWindows, *,
    outlier_factor: float = OUTLIER_FACTOR, batch: int = 16, seed: int = 0,
) -> LayerMapData:
    """Count firings per label for every SAE and the three controls on the labelled windows."""
    firings = collect_firings(lm, saes, medians, data, outlier_factor=outlier_factor,
                              batch=batch)
    return counts_from_firings(firings, data.vocab, centres_of(saes), seed=seed)


def centres_of(saes: dict[str, Sae]) -> dict[str, Tensor]:
    """Where each SAE encodes from: its b_dec, the controls' centre."""
    return {h: sae.b_dec.detach().float().cpu() for h, sae in saes.items()}  # as firings


def read_layer_map(folder: Path | str | None) -> LayerMapData | None:
    """The layer map of an atlas folder, read once per version on disk; None when it was
    never built or was computed from other SAEs than the folder's (stale); CorruptFile when
    a file of it is damaged. Every reader goes through here, so a map built later is seen by
    all, and one of other SAEs by none."""
    return read_derived(folder, LAYER_MAP_FILE, LayerMapData.load)


def has_layer_map(folder: Path) -> bool:
    """Whether a whole, current layer map is on disk (a damaged one counts as missing)."""
    try:
        return read_layer_map(folder) is not None
    except CorruptFile:
        return False


def ensure_layer_map(folder: Path, *, lm: LM | None = None,
                     report: Report | None = None) -> LayerMapData:
    """The atlas's layer map alone, computed once and cached; one that is stale or damaged
    is reported and computed again (explore/evidence.py builds it with the other layer
    evidence from the same pass)."""
    folder = Path(folder)
    try:
        if (lmap := read_layer_map(folder)) is not None:
            return lmap
    except CorruptFile as err:
        log.warning("%s", err)
        if report:
            report(f"rebuilding the damaged layer map: {err}", 0.0)
    run = labelled_pass(folder, lm, report)
    lmap = counts_from_firings(run.firings, run.vocab, centres_of(run.saes))
    lmap.sae_fingerprint = run.fingerprint
    with atlas_lock(folder):
        lmap.save(folder / LAYER_MAP_FILE)
    return lmap
