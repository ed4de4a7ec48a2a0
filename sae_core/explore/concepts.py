"""Find features for a concept typed as a word or short phrase ("ocean", "Paris", "anger").

The concept goes into a few sentence templates (always mid-sentence: the first tokens of a
text get features of their own). At every layer of the atlas, a feature's *concept
activation* is its strongest activation on the concept's tokens in a template, averaged
over templates; its *neutral activation* is its mean over all tokens of a fixed set of
everyday sentences. Score = (concept - neutral) / the layer's typical residual norm, so
layers compare on one scale. Kept: features that fire in at least half the templates and
on at most `MAX_NEUTRAL_RATE` of neutral tokens (a feature that fires everywhere is no
handle on a concept). Position 0 and massive activations are skipped, as in training.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor

from ..activations import keep_mask, layer_of
from ..atlas.layout import LoadedAtlas
from ..corpus import bos_id
from ..errors import BadInput, check_layer_range, check_text, check_whole
from ..hooks import run_captured
from ..norms import typical_norms
from .feature_index import TOKENS_FILE, has_feature_index, index_dir, layer_file
from .layermap import read_layer_map

TEMPLATES = (
    "I keep thinking about {c}.",
    "This is a story about {c}.",
    "Everyone was talking about {c} today.",
    "Tell me more about {c}, please.",
    "My friend wrote a poem about {c} last week.",
)
NEUTRAL = (
    "The meeting starts at ten, so please bring the report.",
    "He opened the window and sat down at the desk.",
    "Add two cups of flour and stir for a minute.",
    "The function returns a list of strings.",
    "She said she would call back later in the afternoon.",
    "We walked to the station and waited for the train.",
    "The results are shown in the table below.",
    "It was a quiet morning and nothing much happened.",
    "Please read the instructions before you begin.",
    "They moved into a new house last year.",
    "I keep thinking about the meeting.",
    "This is a story about a family.",
    "Everyone was talking about it today.",
    "Tell me more about your plan, please.",
    "My friend wrote a letter last week.",
    "The number of users grew slowly over time.",
)
MAX_CONCEPT_CHARS = 60
MAX_NEUTRAL_RATE = 0.1
LABEL_TASKS = ("pos", "ent")
SNIPPET_LEFT, SNIPPET_RIGHT = 12, 4


@dataclass(frozen=True)
class ConceptHit:
    hookpoint: str
    feature: int
    score: float
    """(concept activation - neutral activation) / the layer's typical residual norm."""
    concept_act: float
    """Mean over templates of the feature's peak on the concept's tokens."""
    fires: float
    """Share of templates where it fires on the concept."""
    neutral_rate: float
    """Share of neutral tokens where it fires."""
    label: str
    """Layer-map label(s) with consistency, e.g. "NOUN 0.91 · GPE 0.85"; "" without a map."""
    snippet: str
    """Its top corpus context (feature index) with the peak token in [brackets], else the
    template where it fired most on the concept."""

    @property
    def layer(self) -> int:
        return layer_of(self.hookpoint)


def batch_with_offsets(loaded: LoadedAtlas, texts: list[str]) -> tuple[Tensor, Tensor, list]:
    """(ids (B, L), attention mask (B, L), offsets per text) with a BOS first if the
    tokenizer has one, right-padded."""
    tok = loaded.lm.tokenizer
    bos = bos_id(tok, None)
    enc = [tok(t, add_special_tokens=False, return_offsets_mapping=True) for t in texts]
    lead = [] if bos is None else [bos]
    L = max(len(e.input_ids) for e in enc) + len(lead)
    ids = torch.full((len(texts), L), tok.pad_token_id or 0, dtype=torch.long)
    mask = torch.zeros(len(texts), L, dtype=torch.long)
    offsets = []
    for i, e in enumerate(enc):
        row = lead + e.input_ids
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
        offsets.append([(0, 0)] * len(lead) + list(e.offset_mapping))
    return ids, mask, offsets


def _acts(loaded: LoadedAtlas, texts: list[str], hookpoints: list[str], norms: dict):
    ids, mask, offsets = batch_with_offsets(loaded, texts)
    with torch.inference_mode():
        acts = run_captured(loaded.lm, ids, hookpoints, bf16=False, attention_mask=mask)
    keep = {h: keep_mask(acts[h], norms[h], loaded.outlier_factor) & mask.bool()
            for h in hookpoints}
    return acts, keep, offsets


_neutral: dict[tuple[Path, str], tuple[Tensor, Tensor]] = {}
_lock = threading.Lock()


def _neutral_stats(loaded: LoadedAtlas, hookpoints: list[str], norms: dict) -> dict:
    """Per hookpoint: (mean activation (S,), firing rate (S,)) on the neutral sentences."""
    todo = [h for h in hookpoints if (loaded.folder.resolve(), h) not in _neutral]
    if todo:
        acts, keep, _ = _acts(loaded, list(NEUTRAL), todo, norms)
        with torch.inference_mode():
            for h in todo:
                a_NS = loaded.saes[h].encode(acts[h][keep[h]].float())
                with _lock:
                    _neutral[(loaded.folder.resolve(), h)] = (a_NS.mean(0), (a_NS > 0).float()
                                                             .mean(0))
    return {h: _neutral[(loaded.folder.resolve(), h)] for h in hookpoints}


def _label(loaded: LoadedAtlas, hookpoint: str, feature: int) -> str:
    lmap = read_layer_map(loaded.folder)
    if lmap is None or hookpoint not in lmap.hookpoints:
        return ""
    parts = []
    for task in LABEL_TASKS:
        stats = lmap.stats("sae", hookpoint, task)
        lab = int(stats.label[feature])
        if lab >= 0 and lmap.vocab[task][lab] not in ("none", "sep", "space"):
            parts.append(f"{lmap.vocab[task][lab]} {float(stats.consistency[feature]):.2f}")
    return " · ".join(parts)


def _index_snippet(loaded: LoadedAtlas, hookpoint: str, feature: int) -> str | None:
    """The feature's top context from the atlas's feature index, if one was built."""
    folder = loaded.folder
    if not has_feature_index(folder) or not layer_file(folder, hookpoint).exists():
        return None
    try:
        with safe_open(str(layer_file(folder, hookpoint)), "pt") as f:
            tok = int(f.get_slice("top_tok")[feature : feature + 1, 0:1].item())
        with safe_open(str(index_dir(folder) / TOKENS_FILE), "pt") as f:
            seq_len = f.get_slice("tokens").get_shape()[1]
            w, pos = divmod(tok, seq_len)
            row = f.get_slice("tokens")[w : w + 1, :][0] if tok >= 0 else None
    except (KeyError, OSError, ValueError):  # an index in another layout: no snippet
        return None
    if row is None:
        return None
    decode = loaded.lm.tokenizer.decode
    left = decode(row[max(1, pos - SNIPPET_LEFT) : pos].tolist(), skip_special_tokens=True)
    right = decode(row[pos + 1 : pos + 1 + SNIPPET_RIGHT].tolist(), skip_special_tokens=True)
    return f"…{left}[{decode([int(row[pos])])}]{right}…".replace("\n", " ")


def find_concept_features(
    loaded: LoadedAtlas, concept: str, *, top: int = 10, per_layer: int = 2,
    layers: tuple[int, int] | None = None,
) -> list[ConceptHit]:
    """The `top` features that fire on `concept` more than on neutral text, best first, at
    most `per_layer` from one hookpoint; `layers` = (first, last) limits the search."""
    if concept is None or (isinstance(concept, str) and not concept.strip()):
        raise BadInput("concept", "type a word or short phrase to search for (the concept)")
    concept = check_text(concept, "concept", max_chars=10 * MAX_CONCEPT_CHARS).strip()
    if len(concept) > MAX_CONCEPT_CHARS:
        raise BadInput("concept", f"keep the concept under {MAX_CONCEPT_CHARS} characters")
    top, per_layer = check_whole(top, "top", 1, 1000), check_whole(per_layer, "per_layer", 1, 1000)
    layers = check_layer_range(layers)
    hookpoints = [h for h in loaded.saes if layers is None
                  or layers[0] <= layer_of(h) <= layers[1]]
    if not hookpoints:
        raise BadInput("layers", f"no layer of this SAE set lies in {layers[0]}..{layers[1]}")
    norms, _ = typical_norms(loaded.lm, loaded.saes, hookpoints, corpus=loaded.corpus)
    neutral = _neutral_stats(loaded, hookpoints, norms)
    texts = [t.replace("{c}", concept) for t in TEMPLATES]
    acts, keep, offsets = _acts(loaded, texts, hookpoints, norms)
    spans = [(t.index("{c}"), t.index("{c}") + len(concept)) for t in TEMPLATES]
    on_TL = torch.zeros(len(texts), acts[hookpoints[0]].shape[1], dtype=torch.bool)
    for i, ((s, e), offs) in enumerate(zip(spans, offsets, strict=True)):
        for j, (a, b) in enumerate(offs):
            on_TL[i, j] = b > a and a < e and b > s
    candidates = []
    with torch.inference_mode():
        for h in hookpoints:
            sae, (mean_n, rate_n) = loaded.saes[h], neutral[h]
            sel_TL = on_TL & keep[h]
            peak_TS = torch.stack([
                sae.encode(acts[h][i][sel_TL[i]].float()).amax(0) if sel_TL[i].any()
                else torch.zeros(sae.cfg.d_sae) for i in range(len(texts))])
            fires_S = (peak_TS > 0).float().mean(0)
            score_S = (peak_TS.mean(0) - mean_n) / norms[h]
            ok = (fires_S >= 0.5) & (rate_n <= MAX_NEUTRAL_RATE) & (score_S > 0)
            score_S = torch.where(ok, score_S, -torch.inf)
            vals, ids = score_S.topk(min(per_layer, len(score_S)))
            for v, f in zip(vals.tolist(), ids.tolist(), strict=True):
                if v > -torch.inf:
                    best = int(peak_TS[:, f].argmax())
                    candidates.append((v, h, f, float(peak_TS[:, f].mean()),
                                       float(fires_S[f]), float(rate_n[f]), texts[best]))
    candidates.sort(key=lambda c: -c[0])
    return [ConceptHit(h, f, round(v, 4), round(a, 3), fr, round(nr, 4), _label(loaded, h, f),
                       _index_snippet(loaded, h, f) or text)
            for v, h, f, a, fr, nr, text in candidates[:top]]
