"""The layer map: label counts per layer and task for SAE features and two controls.

For every hookpoint and labelling task we keep the (features, labels) count matrix of
firings, for three kinds of "features":
- `sae`: the SAE's latents, firing where their activation is > 0 (sae_core/encode.py);
- `neuron`: the raw basis, each residual dimension and its negative, firing on its top tokens;
- `random`: as many random unit directions, firing the same way.
Controls fire at the SAE's measured mean rate, so support is comparable. Counts are
computed once (`ensure_layer_map`, stored in the atlas folder); thresholds are applied later
in milliseconds (`LayerMapData.heatmap`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..activations import OUTLIER_FACTOR, outlier_factor_of
from ..atlas.fingerprint import sae_fingerprint
from ..atlas.layout import check_fits, current_fingerprint, load_atlas, read_once
from ..atlas.writing import atlas_lock
from ..atomic import CorruptFile, load_tensors, read_json, save_tensors, write_json
from ..corpus import load_texts
from ..encode import encode_batch, pad_cat
from ..lm import LM, load_named
from ..norms import medians_of
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
    random_directions,
    topq_tokens,
)
from .labels import LabelledWindows, load_or_build_labels

log = logging.getLogger(__name__)
MAP_TASKS = ("pos", "dep", "ent", "shape")
KINDS = ("sae", "neuron", "random")
LAYER_MAP_FILE = "layer_map.safetensors"
"""In the atlas folder, with layer_map.json (written last) and the labels cache labels.*."""
LABEL_DOC_STRIDE = 8
"""The layer map labels every 8th corpus document (~45k tokens, all genres)."""


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
                "fire_rate": self.fire_rate, "sae_fingerprint": self.sae_fingerprint}
        write_json(path.with_suffix(".json"), meta, indent=None)

    @classmethod
    def load(cls, path: Path) -> LayerMapData:
        """CorruptFile when either file is truncated or damaged."""
        meta = read_json(path.with_suffix(".json"))
        tensors = load_tensors(path)
        base = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("base_rate/")}
        counts = {k: v for k, v in tensors.items() if not k.startswith("base_rate/")}
        return cls(meta["hookpoints"], meta["vocab"], counts, base, meta["n_tokens"],
                   meta["fire_rate"], sae_fingerprint=meta.get("sae_fingerprint", ""))


@dataclass
class LayerFirings:
    """What one layer did on the labelled tokens (positions the SAE was trained on). Every
    per-token field is aligned: row n is one kept token of the labelled windows."""

    x_ND: Tensor
    """Activations, bf16, for the controls and the dense probes."""
    labels: dict[str, Tensor]
    """task -> (N,) label ids."""
    idx_NK: Tensor
    """Firing latents per token (encode.py: all of them, for every architecture)..."""
    valid_NK: Tensor
    """... where True; other slots are padding."""
    d_sae: int
    """This layer's SAE width (a set may mix widths)."""
    vals_NK: Tensor
    """float32 activations matching `idx_NK` (0 where not valid)."""
    tokens_N: Tensor
    """int64 token ids."""
    where_N: Tensor
    """int64 flat position (window * seq_len + position): the same token in every layer
    (layers keep slightly different tokens; see activations.keep_mask)."""
    heldout_N: Tensor
    """bool: the token is in a held-out window (`heldout_windows`): probes, names and their
    scores learn on the other tokens and are measured on these."""


def heldout_windows(n_windows: int) -> Tensor:
    """(n_windows,) bool: every second labelled window is held out, so both halves span every
    genre of the corpus (the labelled documents are spread over it)."""
    return torch.arange(n_windows) % 2 == 1


@torch.inference_mode()
def collect_firings(
    lm: LM, saes: dict[str, Sae], medians: dict[str, float], data: LabelledWindows, *,
    outlier_factor: float = OUTLIER_FACTOR, batch: int = 16,
) -> dict[str, LayerFirings]:
    """One captured forward per batch of labelled windows; every SAE encodes its layer
    through the views' one encoding path (sae_core/encode.py)."""
    parts: dict[str, list[LayerFirings]] = {h: [] for h in saes}
    n_windows, seq_len = data.windows.shape
    where_WL = torch.arange(n_windows * seq_len).view(n_windows, seq_len)
    heldout_WL = heldout_windows(n_windows)[:, None].expand(n_windows, seq_len)
    for start in range(0, n_windows, batch):
        rows = slice(start, start + batch)
        codes = encode_batch(lm, saes, data.windows[rows], medians,
                             outlier_factor=outlier_factor)
        for h, c in codes.items():
            keep = c.keep_BL
            labels = {t: torch.from_numpy(data.labels[t][rows].astype(np.int64))[keep]
                      for t in MAP_TASKS}
            vals_NK = c.vals_BLK[keep]
            parts[h].append(LayerFirings(
                c.acts_BLD[keep].bfloat16(), labels, c.idx_BLK[keep], vals_NK > 0,
                saes[h].cfg.d_sae, vals_NK, data.windows[rows][keep], where_WL[rows][keep],
                heldout_WL[rows][keep]))
    return {h: _concat(p) for h, p in parts.items()}


def _concat(parts: list[LayerFirings]) -> LayerFirings:
    labels = {t: torch.cat([p.labels[t] for p in parts]) for t in parts[0].labels}
    vals, idx = pad_cat([(p.vals_NK, p.idx_NK) for p in parts])

    def cat(name: str) -> Tensor:
        return torch.cat([getattr(p, name) for p in parts])

    return LayerFirings(cat("x_ND"), labels, idx, vals > 0, parts[0].d_sae, vals,
                        cat("tokens_N"), cat("where_N"), cat("heldout_N"))


def counts_from_firings(
    firings: dict[str, LayerFirings], vocab: dict[str, list[str]], *,
    n_control: int | None = None, seed: int = 0,
) -> LayerMapData:
    """All label counts: SAE features, raw neurons and random directions, every layer."""
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
        x = f.x_ND.float()
        n_dirs = n_control or 2 * x.shape[1]
        neuron_acts = torch.cat([x, -x], dim=1)[:, :n_dirs]
        random_acts = x @ random_directions(x.shape[1], n_dirs, seed=seed + i).T
        for kind, acts_NF in (("neuron", neuron_acts), ("random", random_acts)):
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
    """Count firings per label for every SAE and both controls on the labelled windows."""
    firings = collect_firings(lm, saes, medians, data, outlier_factor=outlier_factor,
                              batch=batch)
    return counts_from_firings(firings, data.vocab, seed=seed)


def read_layer_map(folder: Path | str | None) -> LayerMapData | None:
    """The layer map of an atlas folder, read once per version on disk; None when it was
    never built or was computed from other SAEs than the folder's (stale); CorruptFile when
    a file of it is damaged. Every reader goes through here, so a map built later is seen by
    all, and one of other SAEs by none."""
    if not folder:
        return None
    path = Path(folder) / LAYER_MAP_FILE
    if not path.with_suffix(".json").exists():
        return None
    lmap = read_once(path.with_suffix(".json"), lambda: LayerMapData.load(path))
    return lmap if lmap.sae_fingerprint == current_fingerprint(folder) else None


def has_layer_map(folder: Path) -> bool:
    """Whether a whole, current layer map is on disk (a damaged one counts as missing)."""
    try:
        return read_layer_map(folder) is not None
    except CorruptFile:
        return False


def ensure_layer_map(folder: Path, *, lm: LM | None = None,
                     report: Report | None = None) -> LayerMapData:
    """The atlas's layer map, computed once (labels with spaCy, one pass) and cached; one
    that is stale or damaged is reported and computed again."""
    folder = Path(folder)
    try:
        if (lmap := read_layer_map(folder)) is not None:
            return lmap
    except CorruptFile as err:
        log.warning("%s", err)
        if report:
            report(f"rebuilding the damaged layer map: {err}", 0.0)
    info, _, saes = load_atlas(folder)
    lm = lm or load_named(info["model"])
    check_fits(saes, lm)
    if report:
        report("labelling the corpus with spaCy", 0.0)
    texts = load_texts(info["corpus"])[::LABEL_DOC_STRIDE]
    data = load_or_build_labels(lm.tokenizer, texts, info["seq_len"], folder / "labels")
    if report:
        report(f"layer map over {data.windows.numel():,} tokens", 0.3)
    lmap = compute_layer_map(lm, saes, medians_of(saes), data,
                             outlier_factor=outlier_factor_of(info))
    lmap.sae_fingerprint = sae_fingerprint(folder, info)
    with atlas_lock(folder):
        lmap.save(folder / LAYER_MAP_FILE)
    return lmap
