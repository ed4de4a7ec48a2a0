"""The layer map: label counts per layer and task for SAE features and two controls.

For every hookpoint and labelling task we keep the (features, labels) count matrix of
firings, for three kinds of "features":
- `sae`: the SAE's latents (TopK-active, or ReLU activation above `relu_threshold`);
- `neuron`: the raw basis, each residual dimension and its negative, firing on its top tokens;
- `random`: as many random unit directions, firing the same way.
Controls fire at the SAE's measured mean rate, so support is comparable. Counts are
computed once; thresholds are applied later in milliseconds (`LayerMapData.heatmap`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from .consistency import (
    FeatureStats,
    base_rates,
    feature_stats,
    label_counts,
    label_counts_dense,
    layer_map,
    random_directions,
    topq_fires,
)
from .hooks import run_captured
from .labels import LabelledWindows
from .lm import LM
from .sae import Sae
from .train import keep_mask

MAP_TASKS = ("pos", "dep", "ent", "shape")
KINDS = ("sae", "neuron", "random")


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
    """Mean SAE firing rate over layers; each layer's controls fire at that layer's rate."""
    _stats: dict[str, FeatureStats] = field(default_factory=dict, repr=False)

    def stats(self, kind: str, hookpoint: str, task: str) -> FeatureStats:
        key = f"{kind}/{hookpoint}/{task}"
        if key not in self._stats:
            self._stats[key] = feature_stats(self.counts[key], self.base_rate[task])
        return self._stats[key]

    def heatmap(self, task: str, threshold: float, min_support: int, kind: str = "sae") -> Tensor:
        """(n_layers, n_labels) accepted features per layer and label."""
        n_labels = len(self.vocab[task])
        return torch.stack([
            layer_map(self.stats(kind, h, task), threshold, min_support, n_labels).n_accepted
            for h in self.hookpoints
        ])

    def accept_share(self, task: str, threshold: float, min_support: int, kind: str) -> list[float]:
        """Per layer: share of all features accepted for some label."""
        n_labels = len(self.vocab[task])
        return [layer_map(self.stats(kind, h, task), threshold, min_support, n_labels)
                .share_accepted for h in self.hookpoints]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = dict(self.counts) | {f"base_rate/{t}": r for t, r in self.base_rate.items()}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
        meta = {"hookpoints": self.hookpoints, "vocab": self.vocab, "n_tokens": self.n_tokens,
                "fire_rate": self.fire_rate}
        path.with_suffix(".json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, path: Path) -> LayerMapData:
        meta = json.loads(path.with_suffix(".json").read_text())
        tensors = load_file(str(path))
        base = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("base_rate/")}
        counts = {k: v for k, v in tensors.items() if not k.startswith("base_rate/")}
        return cls(meta["hookpoints"], meta["vocab"], counts, base, meta["n_tokens"],
                   meta["fire_rate"])


def _sae_counts(sae: Sae, x_ND: Tensor, labels: dict[str, Tensor], n_labels: dict[str, int],
                relu_threshold: float) -> dict[str, Tensor]:
    if sae.cfg.architecture == "topk":
        vals, idx = sae.encode_topk(x_ND)
        return {t: label_counts(idx, labels[t], sae.cfg.d_sae, n_labels[t], valid_NK=vals > 0)
                for t in labels}
    fires = sae.encode(x_ND) > relu_threshold
    return {t: label_counts_dense(fires, labels[t], n_labels[t]) for t in labels}


@torch.inference_mode()
def compute_layer_map(
    lm: LM, saes: dict[str, Sae], medians: dict[str, float], data: LabelledWindows, *,
    outlier_factor: float = 10.0, n_control: int | None = None, relu_threshold: float = 1e-3,
    batch: int = 16, seed: int = 0,
) -> LayerMapData:
    """Count firings per label for every SAE and both controls on the labelled windows."""
    hookpoints = list(saes)
    n_labels = {t: len(data.vocab[t]) for t in MAP_TASKS}
    counts: dict[str, Tensor] = {}
    kept_x: dict[str, list[Tensor]] = {h: [] for h in hookpoints}
    kept_labels: dict[str, dict[str, list[Tensor]]] = {h: {t: [] for t in MAP_TASKS}
                                                       for h in hookpoints}
    for start in range(0, len(data.windows), batch):
        acts = run_captured(lm, data.windows[start:start + batch], hookpoints)
        for h, sae in saes.items():
            keep = keep_mask(acts[h], medians[h], outlier_factor)
            x = acts[h][keep].float()
            labels = {t: torch.from_numpy(data.labels[t][start:start + batch].astype(np.int64))
                      [keep] for t in MAP_TASKS}
            for t, c in _sae_counts(sae, x, labels, n_labels, relu_threshold).items():
                key = f"sae/{h}/{t}"
                counts[key] = counts[key] + c if key in counts else c
                kept_labels[h][t].append(labels[t])
            kept_x[h].append(x.bfloat16())

    rates = []
    for i, h in enumerate(hookpoints):
        x = torch.cat(kept_x.pop(h)).float()
        labels = {t: torch.cat(kept_labels[h][t]) for t in MAP_TASKS}
        # Each firing has one label, so a task's counts sum to the layer's firings.
        fire_rate = float(counts[f"sae/{h}/{MAP_TASKS[0]}"].sum()) / (len(x) * saes[h].cfg.d_sae)
        rates.append(fire_rate)
        n_dirs = n_control or 2 * x.shape[1]
        neuron_acts = torch.cat([x, -x], dim=1)[:, :n_dirs]
        random_acts = x @ random_directions(x.shape[1], n_dirs, seed=seed + i).T
        for kind, acts_NF in (("neuron", neuron_acts), ("random", random_acts)):
            fires = topq_fires(acts_NF, fire_rate)
            for t in MAP_TASKS:
                counts[f"{kind}/{h}/{t}"] = label_counts_dense(fires, labels[t], n_labels[t])
    some = kept_labels[hookpoints[0]]
    base = {t: base_rates(torch.cat(some[t]), n_labels[t]) for t in MAP_TASKS}
    n_tokens = sum(len(v) for v in some[MAP_TASKS[0]])
    return LayerMapData(hookpoints, {t: data.vocab[t] for t in MAP_TASKS}, counts, base,
                        n_tokens, sum(rates) / len(rates))
