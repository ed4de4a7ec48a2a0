"""Find features: by the text they fire on (all layers at once), by their layer-map label,
or by their name (explore/names.py).

Search by text ranks (layer, feature) pairs by how strongly the feature fires on its
strongest token of the text, *relative to the layer's typical residual norm*: the length
the feature writes into the residual stream (activation x its decoder row norm; rows are
unit vectors in our TopK SAEs, not in SAELens standard or JumpReLU ones), divided by the
layer's median norm (160-500 in SmolLM2, growing with depth), so layers are comparable. A
score of 0.3 means the feature alone accounts for 30% of a typical token's residual norm
at that layer. When per-feature reference activations are
known (`corpus_peaks`: each feature's top activation in the atlas's feature index), pass
them as `reference`: the score is then the share of the feature's own top activation, which
favours features for which this text is a prime example over features that are merely loud
everywhere; a feature that never fired in the index scores 0 (no reference, no claim).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import Tensor

from ..activations import layer_name, layer_of
from ..atlas.layout import LoadedAtlas, index_layer_file
from ..errors import BadInput, check_number, check_text, check_whole
from .feature_index import has_feature_index, read_index_meta
from .layermap import MAP_TASKS, LayerMapData, read_layer_map
from .live import LiveView, live_view
from .names import FeatureNames, label_of, readable_names

LOUD = 3.0
"""Search skips tokens whose residual norm is over LOUD x the layer's typical norm. In
SmolLM2 ~1.4% of tokens (mostly " the" and a text's first token; measured on README, docs,
code and corpus samples) reach 3-10x at some layers: secondary attention sinks, whose
strongest features encode the sink, not the word, and would top every search."""
MIN_LABEL_SUPPORT = 5
"""A label from fewer firings than this is shown as tentative."""


class TextHit(NamedTuple):
    """A feature that fires on the searched text, at its strongest token."""

    layer: int
    feature: int
    token: str
    position: int
    activation: float
    score: float
    """See the module docstring."""
    label: str
    """Its layer-map label (`feature_labels`), "" without a layer map."""
    name: str = ""
    """Its name and F1 (explore/names.py `label_of`), "" without names."""
    hookpoint: str = ""
    """Where its SAE reads (`layer` alone is ambiguous in a set with several sites)."""


class NameHit(NamedTuple):
    """A feature whose name matches a search by name."""

    layer: int
    feature: int
    name: str
    f1: float
    """Held-out F1 of the name as a detector of the feature's firings."""
    precision: float
    recall: float
    weak: bool
    """F1 below names.LOW_SCORE."""
    hookpoint: str = ""


class LabelHit(NamedTuple):
    """A feature whose layer-map label matches a label search."""

    layer: int
    feature: int
    label: str
    consistency: float
    support: int
    lift: float
    hookpoint: str = ""


def feature_labels(lmap: LayerMapData | None, hookpoint: str, ids: list[int]) -> list[str]:
    """A short label per feature from the layer map, e.g. "PROPN (pos, 93% of 120)".

    Of the labelling tasks, the one whose label has the highest lift (consistency over
    the label's base rate) is the most informative: "no entity" at 95% says less than
    "PROPN" at 60%. "" when there is no layer map for the hookpoint or no firing.
    """
    if lmap is None or hookpoint not in lmap.hookpoints:
        return ["" for _ in ids]
    stats = {t: lmap.stats("sae", hookpoint, t) for t in MAP_TASKS}
    out = []
    for f in ids:
        if not 0 <= f < len(stats[MAP_TASKS[0]].support):
            out.append("")  # no feature (-1) or not one of this layer's
            continue
        best, best_lift = None, -math.inf
        for t, s in stats.items():
            if int(s.support[f]) == 0:
                continue
            lift = float(s.lift[f])
            lift = 0.0 if math.isinf(lift) else lift  # label absent from the base tokens
            if lift > best_lift:
                best, best_lift = t, lift
        if best is None:
            out.append("(never fired in the layer map)")
            continue
        s = stats[best]
        name = lmap.vocab[best][int(s.label[f])]
        support = int(s.support[f])
        shaky = "?" if support < MIN_LABEL_SUPPORT else ""
        out.append(f"{name}{shaky} ({best}, {100 * float(s.consistency[f]):.0f}% of {support})")
    return out


def best_firings(view: LiveView, reference: Mapping[str, Tensor] | None = None, *,
                 loud: float = LOUD) -> list[tuple[float, int, int, int, float]]:
    """Every (score, layer index, feature, token, activation) with the feature's strongest
    token of the text, best score first, skipping loud tokens (see `LOUD`). See the module
    docstring for the score."""
    n_tok, n_lay, top = view.top_idx_TLK.shape
    idx = view.top_idx_TLK.reshape(-1)
    act = view.top_act_TLK.reshape(-1)
    write = view.top_write_TLK.reshape(-1)
    tok = torch.arange(n_tok).repeat_interleave(n_lay * top)
    lay = torch.arange(n_lay).repeat_interleave(top).repeat(n_tok)
    quiet_TL = view.norm_TL <= loud * torch.tensor(view.medians, dtype=torch.float32)
    live = (idx >= 0) & quiet_TL[tok, lay]
    idx, act, write, tok, lay = idx[live], act[live], write[live], tok[live], lay[live]
    if reference is None:
        score = write / torch.tensor(view.medians, dtype=torch.float32)[lay]
    else:  # a share of the feature's own peak: its decoder norm cancels
        refs = [reference[h].float() for h in view.hookpoints]
        width = max(len(r) for r in refs)  # layers may differ in width
        ref_LS = torch.stack([F.pad(r, (0, width - len(r))) for r in refs])
        scale = ref_LS[lay, idx]
        score = act / torch.where(scale > 0, scale, torch.inf)  # no reference: no claim
    # Each (layer, feature) once, at its best token: first occurrence in score order.
    order = score.argsort(descending=True, stable=True)
    key = (lay * (int(idx.max()) + 1 if len(idx) else 1) + idx)[order]
    _, inv = torch.unique(key, return_inverse=True)
    first = torch.full((int(inv.max()) + 1 if len(inv) else 0,), len(order), dtype=torch.long)
    first.scatter_reduce_(0, inv, torch.arange(len(order)), "amin")
    pick = order[first.sort().values]
    return list(zip(score[pick].tolist(), lay[pick].tolist(), idx[pick].tolist(),
                    tok[pick].tolist(), act[pick].tolist(), strict=True))


def corpus_peaks(folder: Path | str) -> dict[str, Tensor] | None:
    """Per hookpoint, (d_sae,) each feature's top activation in the atlas's feature index
    (0 if it never fired there), for `search_text(reference=...)`; None without an index."""
    if not has_feature_index(Path(folder)):
        return None
    meta = read_index_meta(Path(folder))
    peaks = {}
    for h in meta["layers"]:
        with safe_open(str(index_layer_file(Path(folder), h)), "pt") as f:
            peaks[h] = f.get_slice("top_val")[:, 0]
    return peaks


def search_text(loaded: LoadedAtlas, text: str, *, limit: int = 25,
                layers: list[int] | None = None, reference: Mapping[str, Tensor] | None = None,
                max_tokens: int = 256) -> tuple[list[TextHit], LiveView]:
    """The features, over all layers (or `layers`: layer numbers, every site at each), that
    fire most on `text`, best first.

    Returns (hits, view): one hit per feature, at its strongest token; `view` is the
    underlying live view (notices, tokens). BadInput (a ValueError) on empty text, unknown
    layers or bad numbers.
    """
    limit = check_whole(limit, "limit", 1)
    known = {layer_of(h) for h in loaded.hookpoints}
    if layers is not None:
        if not isinstance(layers, list | tuple):
            raise BadInput("layers", f"layers must be a list of layer numbers, got "
                                     f"{type(layers).__name__}")
        bad = [x for x in layers if isinstance(x, bool) or x not in known]
        if bad:
            raise BadInput("layers", f"layer(s) {bad[:5]!r:.80} not in this atlas; it has "
                                     f"{sorted(known)}")
    view = live_view(loaded, text, max_tokens=max_tokens, top=None)  # every firing feature
    wanted = None if layers is None else {
        i for i, h in enumerate(view.hookpoints) if layer_of(h) in layers}
    rows = [r for r in best_firings(view, reference) if wanted is None or r[1] in wanted]
    lmap, names = read_layer_map(loaded.folder), readable_names(loaded.folder)
    return [TextHit(layer_of(view.hookpoints[j]), f, view.pieces[t], t, a, score,
                    feature_labels(lmap, view.hookpoints[j], [f])[0],
                    label_of(names, view.hookpoints[j], f), view.hookpoints[j])
            for score, j, f, t, a in rows[:limit]], view


MAX_NAME_QUERY_CHARS = 200


def features_by_name(names: FeatureNames, query: str, *, limit: int = 50) -> list[NameHit]:
    """Features whose name contains `query` (case-insensitive): those with a token or label
    equal to it first, then by the name's held-out F1. BadInput on empty or long text."""
    query = check_text(query, "the name to search", max_chars=MAX_NAME_QUERY_CHARS)
    limit = check_whole(limit, "limit", 1)
    return [NameHit(layer_of(m.hookpoint), m.feature, m.name.text, m.name.f1,
                    m.name.precision, m.name.recall, m.name.weak, m.hookpoint)
            for m in names.search(query, limit)]


def features_by_label(lmap: LayerMapData, layer: int | str | None, task: str, label: str,
                      min_consistency: float = 0.0, min_support: int = 1, *,
                      min_lift: float = 0.0, limit: int | None = None) -> list[LabelHit]:
    """SAE features whose layer-map label for `task` is `label`, with consistency >=
    `min_consistency`, support >= `min_support` (at least 1) and lift >= `min_lift`.

    `layer=None` searches every hookpoint of the map, a layer number every site at that
    layer, a hookpoint name (`layers.3.mlp`) that one. Most consistent first (then most
    firings). Features that never fired (NaN consistency) never match.
    """
    if not isinstance(task, str) or task not in lmap.vocab:
        raise BadInput("task", f"unknown task {task!r:.40}; choose from {sorted(lmap.vocab)}")
    if not isinstance(label, str) or label not in lmap.vocab[task]:
        raise BadInput("label", f"unknown {task} label {label!r:.40}; choose from "
                                f"{', '.join(lmap.vocab[task])}")
    min_consistency = check_number(min_consistency, "min_consistency", 0.0, 1.0)
    min_support = check_whole(min_support, "min_support", 0)
    min_lift = check_number(min_lift, "min_lift", 0.0, 1e9)
    if limit is not None:
        limit = check_whole(limit, "limit", 1)
    hookpoints = _map_hookpoints(lmap, layer)
    hits = []
    for h in hookpoints:
        s = lmap.stats("sae", h, task)
        for f in lmap.cell_features("sae", h, task, label, min_consistency, min_support,
                                    min_lift).tolist():
            hits.append(LabelHit(layer_of(h), f, label, float(s.consistency[f]),
                                 int(s.support[f]), float(s.lift[f]), h))
    hits.sort(key=lambda hit: (-hit.consistency, -hit.support))  # stable: layer order on ties
    return hits if limit is None else hits[:limit]


def _map_hookpoints(lmap: LayerMapData, layer: int | str | None) -> list[str]:
    """The layer map's hookpoints that `features_by_label`'s `layer` names."""
    if layer is None:
        return list(lmap.hookpoints)
    if isinstance(layer, str) and layer in lmap.hookpoints:
        return [layer]
    n = check_whole(layer, "layer", 0) if not isinstance(layer, str) else None
    found = [h for h in lmap.hookpoints if layer_of(h) == n]
    if not found:
        shown = ", ".join(layer_name(h) for h in lmap.hookpoints)
        raise BadInput("layer", f"layer {layer!r:.40} is not in this layer map; it has {shown}")
    return found
