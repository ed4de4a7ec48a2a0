"""One pass of an atlas's SAEs over its labelled tokens: what every layer-evidence product
(layer map, probing, feature names, lineage) reads, so the model runs once for all of them."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..activations import OUTLIER_FACTOR
from ..atlas.info import AtlasInfo
from ..atlas.layout import LABELS_STEM, fit_to, load_atlas
from ..corpus import load_texts
from ..encode import LayerCodes, encode_batch, pad_cat
from ..lm import LM, load_named
from ..model_controls import lm_for_atlas
from ..norms import medians_of
from ..progress import Report
from ..sae import Sae
from .labels import LabelledWindows, load_or_build_labels

MAP_TASKS = ("pos", "dep", "ent", "shape")
"""The labelling tasks the layer evidence reads (labels.TASKS less the fine tag)."""
LABEL_DOC_STRIDE = 8
"""Every 8th corpus document is labelled (~45k tokens, all genres)."""


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
    doc_N: Tensor | None = None
    """int64 corpus document of the token (`document_ids`), set with the labels: the unit a
    bootstrap resamples (tokens of one document are not independent)."""


SEP_LABEL = 0
"""Label id of `sep` (BOS/EOS) in every spaCy task (labels._base_vocab puts it first)."""


def document_ids(sep_WL: Tensor) -> Tensor:
    """(W, L) int64: the corpus document of every token of the labelled windows, from where
    the separators are (`sep_WL` bool; corpus.token_windows joins documents by EOS). A
    separator closes its document; one at position 0 is a window's BOS, not a boundary."""
    ends_WL = sep_WL.bool().clone()
    ends_WL[:, 0] = False
    ends_T = ends_WL.reshape(-1).long()
    return (ends_T.cumsum(0) - ends_T).view(sep_WL.shape)


def n_documents(firings: dict[str, LayerFirings]) -> int:
    """How many documents the layers' tokens come from (`doc_N` ids 0..n-1; a bootstrap
    draws that many); 0 when no layer records its tokens' documents."""
    return max((int(f.doc_N.max()) + 1 for f in firings.values()
                if f.doc_N is not None and len(f.doc_N)), default=0)


def heldout_windows(n_windows: int) -> Tensor:
    """(n_windows,) bool: every second labelled window is held out, so both halves span every
    genre of the corpus (the labelled documents are spread over it)."""
    return torch.arange(n_windows) % 2 == 1  # cpu: masks CPU codes


@torch.inference_mode()
def collect_firings(
    lm: LM, saes: dict[str, Sae], medians: dict[str, float], data: LabelledWindows, *,
    outlier_factor: float = OUTLIER_FACTOR, batch: int = 8,
) -> dict[str, LayerFirings]:
    """One captured forward per batch of labelled windows; every SAE encodes its layer
    through the views' one encoding path (sae_core/encode.py). 8 windows a batch, as the
    feature index reads them: the pass after training reads both (one_pass.py)."""
    parts = FiringParts(data.windows.shape, saes)
    for start in range(0, len(data.windows), batch):
        ids = data.windows[start:start + batch]
        parts.add(start, ids, encode_batch(lm, saes, ids, medians, outlier_factor=outlier_factor))
    return with_labels(parts.firings(), data.labels)


class FiringParts:
    """Firings of batches of labelled windows (rows `start`..), gathered without their
    labels, which `with_labels` adds: the labelling can run while the model does."""

    def __init__(self, shape_WL: tuple[int, int], saes: dict[str, Sae]):
        n_windows, seq_len = shape_WL
        self.d_sae = {h: sae.cfg.d_sae for h, sae in saes.items()}
        self.where_WL = torch.arange(n_windows * seq_len).view(n_windows, seq_len)  # cpu: codes
        self.heldout_WL = heldout_windows(n_windows)[:, None].expand(n_windows, seq_len)
        self.parts: dict[str, list[LayerFirings]] = {}

    def add(self, start: int, ids_BL: Tensor, codes: dict[str, LayerCodes]) -> None:
        rows = slice(start, start + len(ids_BL))
        for h, c in codes.items():
            keep, vals_NK = c.keep_BL, c.vals_BLK[c.keep_BL]
            self.parts.setdefault(h, []).append(LayerFirings(
                c.acts_BLD[keep].bfloat16(), {}, c.idx_BLK[keep], vals_NK > 0,
                self.d_sae[h], vals_NK, ids_BL[keep], self.where_WL[rows][keep],
                self.heldout_WL[rows][keep]))

    def firings(self) -> dict[str, LayerFirings]:
        """Per hookpoint, every batch's firings in order (labels still empty)."""
        return {h: _concat(p) for h, p in self.parts.items()}


def with_labels(firings: dict[str, LayerFirings], labels: dict[str, np.ndarray]
                ) -> dict[str, LayerFirings]:
    """The firings with each kept token's labels (`labels`: task -> (W, L) ids) and
    document (`document_ids`: the separators are the `sep` labels)."""
    flat = {t: torch.from_numpy(labels[t].reshape(-1).astype(np.int64)) for t in MAP_TASKS}
    docs_T = document_ids(torch.from_numpy(labels["pos"] == SEP_LABEL)).reshape(-1)
    return {h: replace(f, labels={t: flat[t][f.where_N] for t in MAP_TASKS},
                       doc_N=docs_T[f.where_N]) for h, f in firings.items()}


def _concat(parts: list[LayerFirings]) -> LayerFirings:
    vals, idx = pad_cat([(p.vals_NK, p.idx_NK) for p in parts])

    def cat(name: str) -> Tensor:
        return torch.cat([getattr(p, name) for p in parts])

    return LayerFirings(cat("x_ND"), {}, idx, vals > 0, parts[0].d_sae, vals,
                        cat("tokens_N"), cat("where_N"), cat("heldout_N"))


class LabelledPass(NamedTuple):
    """One pass of an atlas's SAEs over its labelled tokens: what the layer evidence reads."""

    info: AtlasInfo
    lm: LM
    saes: dict[str, Sae]
    vocab: dict[str, list[str]]
    firings: dict[str, LayerFirings]
    fingerprint: str
    medians: dict[str, float] | None = None
    """Each SAE's typical input norm (norms.py); None: from the SAEs' metadata, which a
    build's SAEs do not carry before they are written."""


def labelled_pass(folder: Path, lm: LM | None, report: Report | None) -> LabelledPass:
    """Label every 8th document with spaCy (cached in the folder), then one captured forward
    of the labelled windows with every SAE encoding its layer."""
    info, _, saes, fingerprint = load_atlas(folder)
    lm = lm_for_atlas(lm or load_named(info.model), info.control, info.control_seed)
    fit_to(saes, lm)
    if report:
        report("labelling the corpus with spaCy", 0.0)
    texts = load_texts(info.corpus)[::LABEL_DOC_STRIDE]
    data = load_or_build_labels(lm.tokenizer, texts, info.seq_len, folder / LABELS_STEM)
    if report:
        report(f"one pass over {data.windows.numel():,} labelled tokens", 0.2)
    firings = collect_firings(lm, saes, medians_of(saes), data,
                              outlier_factor=info.outlier_factor)
    return LabelledPass(info, lm, saes, data.vocab, firings, fingerprint)
