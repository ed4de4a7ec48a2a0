"""Find features for a concept typed as a word or short phrase ("ocean", "Paris", "anger").

The concept goes into a few sentence templates (always mid-sentence: the first tokens of a
text get features of their own). At every layer of the atlas, a feature's *concept
activation* is its strongest activation on the concept's tokens in a template, averaged
over templates; its *neutral activation* is its mean over all tokens of a fixed set of
everyday sentences. Score = (concept - neutral) x ||W_dec[f]|| / the layer's typical
residual norm: the length written into the residual stream (decoder rows are unit in our
TopK SAEs, not in SAELens standard or JumpReLU ones), so features and layers compare on one
scale. Encoding goes through the views' one path (sae_core/encode.py). Kept: features
that fire in at least half the templates and on at most `MAX_NEUTRAL_RATE` of neutral
tokens (a feature that fires everywhere is no handle on a concept). Position 0 and massive
activations are skipped, as in training.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor

from ..activations import layer_of
from ..atlas.layout import INDEX_TOKENS_FILE, LoadedAtlas, index_dir, index_layer_file
from ..corpus import bos_id
from ..encode import LayerCodes, decoder_norms, dense, encode_batch
from ..errors import BadInput, check_layer_range, check_text, check_whole
from ..norms import typical_norms
from .feature_index import has_feature_index
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
    """(concept activation - neutral activation) x the feature's decoder row norm / the
    layer's typical residual norm: the extra length it writes on the concept."""
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
    # The batch is built on the CPU; its readers move it to the LM (run_captured does).
    ids = torch.full((len(texts), L), tok.pad_token_id or 0, dtype=torch.long)  # cpu: ids
    mask = torch.zeros(len(texts), L, dtype=torch.long)  # cpu: with the ids
    offsets = []
    for i, e in enumerate(enc):
        row = lead + e.input_ids
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1  # cpu: ids
        offsets.append([(0, 0)] * len(lead) + list(e.offset_mapping))
    return ids, mask, offsets


def _codes(loaded: LoadedAtlas, texts: list[str], hookpoints: list[str], norms: dict
           ) -> tuple[dict[str, LayerCodes], list]:
    """(codes per hookpoint, offsets per text) through the views' one encoding path."""
    ids, mask, offsets = batch_with_offsets(loaded, texts)
    saes = {h: loaded.saes[h] for h in hookpoints}
    codes = encode_batch(loaded.lm, saes, ids, norms, outlier_factor=loaded.outlier_factor,
                         attention_mask=mask)
    return codes, offsets


def _dense_BLS(codes: LayerCodes, d_sae: int) -> Tensor:
    """(texts, L, d_sae) activations; 0 on skipped and padding tokens."""
    B, L, K = codes.vals_BLK.shape
    return dense(codes.vals_BLK.view(-1, K), codes.idx_BLK.view(-1, K), d_sae).view(B, L, -1)


_neutral: dict[Path, tuple[str, dict[str, tuple[Tensor, Tensor]]]] = {}
"""folder -> (fingerprint of its SAEs, per hookpoint (mean, rate)): a rebuilt atlas's SAEs
get new statistics, and the old ones go."""
_lock = threading.Lock()


def _neutral_stats(loaded: LoadedAtlas, hookpoints: list[str], norms: dict) -> dict:
    """Per hookpoint: (mean activation (S,), firing rate (S,)) on the neutral sentences."""
    key = loaded.folder.resolve()
    with _lock:
        if key not in _neutral or _neutral[key][0] != loaded.fingerprint:
            _neutral[key] = (loaded.fingerprint, {})
        known = _neutral[key][1]
    todo = [h for h in hookpoints if h not in known]
    if todo:
        codes, _ = _codes(loaded, list(NEUTRAL), todo, norms)
        for h in todo:
            a_NS = _dense_BLS(codes[h], loaded.saes[h].cfg.d_sae)[codes[h].keep_BL]
            with _lock:
                known[h] = (a_NS.mean(0), (a_NS > 0).float().mean(0))
    return {h: known[h] for h in hookpoints}


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
    if not has_feature_index(folder) or not index_layer_file(folder, hookpoint).exists():
        return None
    try:
        with safe_open(str(index_layer_file(folder, hookpoint)), "pt") as f:
            tok = int(f.get_slice("top_tok")[feature : feature + 1, 0:1].item())
        with safe_open(str(index_dir(folder) / INDEX_TOKENS_FILE), "pt") as f:
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


def _on_concept(offsets: list, n_chars: int, length: int) -> Tensor:
    """(templates, length) bool: tokens that overlap the concept's characters."""
    on_TL = torch.zeros(len(offsets), length, dtype=torch.bool)  # cpu: meets CPU codes
    for i, (template, offs) in enumerate(zip(TEMPLATES, offsets, strict=True)):
        s, e = template.index("{c}"), template.index("{c}") + n_chars
        for j, (a, b) in enumerate(offs):
            on_TL[i, j] = b > a and a < e and b > s
    return on_TL


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
    codes, offsets = _codes(loaded, texts, hookpoints, norms)
    on_TL = _on_concept(offsets, len(concept), codes[hookpoints[0]].keep_BL.shape[1])
    candidates = []
    for h in hookpoints:
        mean_n, rate_n = neutral[h]
        sel_TL1 = (on_TL & codes[h].keep_BL).unsqueeze(-1)
        acts_TLS = _dense_BLS(codes[h], loaded.saes[h].cfg.d_sae)
        peak_TS = (acts_TLS * sel_TL1).amax(dim=1)  # activations are >= 0
        fires_S = (peak_TS > 0).float().mean(0)
        # Lengths written into the residual stream, in units of the layer's typical norm.
        score_S = (peak_TS.mean(0) - mean_n) * decoder_norms(loaded.saes[h]) / norms[h]
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
