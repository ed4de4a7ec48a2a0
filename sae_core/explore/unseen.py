"""The corpus documents an atlas's SAEs never trained on, and one pass of the SAEs over them:
what probing learns and is scored on (probing.py), so that "held out" means held out from
the SAEs as well as from the probe.

A build (atlas/build.py) cuts the corpus, documents joined by EOS, into windows
(corpus.token_windows), holds out `heldout_ids` (corpus.split_ids), and trains on the first
`max_tokens` worth of the other windows in a seeded random order (train/loop.train_saes):
with the default settings 1,200 of the 1,332 training windows. A document is unseen when no
window holding any of its tokens (or its EOS) was trained on: it lies in held-out windows,
in training windows the build never drew, or in the tail the windows cut off.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from ..atlas.info import AtlasInfo
from ..corpus import bos_id, split_ids
from ..lm import LM
from ..norms import medians_of
from ..sae import Sae
from .firings import LayerFirings, collect_firings
from .labels import labelled_windows, load_or_build_labels


def trained_windows(info: AtlasInfo, n_windows: int) -> Tensor:
    """(n_windows,) bool: the windows of the corpus the build trained its SAEs on (as
    train_saes draws them from atlas.json's `heldout_ids`, `seq_len` and `train_cfg`)."""
    if info.heldout_ids is not None:
        held = torch.tensor(info.heldout_ids, dtype=torch.long)  # cpu: window ids
    else:
        held = split_ids(n_windows, info.heldout_windows)[1]
    is_train = torch.ones(n_windows, dtype=torch.bool)  # cpu: a mask of window ids
    is_train[held] = False
    train_ids = is_train.nonzero().squeeze(1)
    if info.train_windows is not None and len(train_ids) != info.train_windows:
        raise ValueError(f"the corpus cuts into {n_windows} windows, not the "
                         f"{info.train_windows + len(held)} the atlas was built from")
    cfg, seq_len = info.train_cfg, info.seq_len
    per_batch = max(cfg["lm_batch_tokens"] // seq_len, 1)
    n_batches = len(train_ids) // per_batch
    if cfg.get("max_tokens") is not None:
        n_batches = min(n_batches, math.ceil(cfg["max_tokens"] / (per_batch * seq_len)))
    order = torch.randperm(len(train_ids), generator=torch.Generator().manual_seed(cfg["seed"]))
    out = torch.zeros(n_windows, dtype=torch.bool)  # cpu: a mask of window ids
    out[train_ids[order[:n_batches * per_batch]]] = True
    return out


def document_spans(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> Tensor:
    """(n_docs, 2) where each document's tokens start and end (its EOS included) in the
    stream corpus.token_windows cuts."""
    lengths = [len(ids) + (tokenizer.eos_token_id is not None)
               for ids in tokenizer(texts, add_special_tokens=False).input_ids]
    ends = torch.tensor(lengths, dtype=torch.long).cumsum(0)  # cpu: token offsets
    return torch.stack([ends - torch.tensor(lengths, dtype=torch.long), ends], 1)  # cpu: same


def unseen_documents(tokenizer: PreTrainedTokenizerBase, texts: list[str], info: AtlasInfo
                     ) -> list[int] | None:
    """Ids of the documents of `texts` (the atlas's corpus) that touch no window the SAEs
    were trained on; None when the atlas does not say what its SAEs were trained on (a set
    loaded from the Hub)."""
    if not info.trained_here:
        return None
    spans = document_spans(tokenizer, texts)
    body = info.seq_len - (bos_id(tokenizer, None) is not None)
    n_windows = int(spans[-1, 1]) // body if len(spans) else 0
    trained = trained_windows(info, n_windows).long()
    upto = torch.cat([torch.zeros(1, dtype=torch.long), trained.cumsum(0)])  # cpu: counts
    first = (spans[:, 0] // body).clamp(max=n_windows)
    last = ((spans[:, 1] - 1) // body + 1).clamp(max=n_windows)
    return (upto[last] - upto[first] == 0).nonzero().squeeze(1).tolist()


class UnseenPass(NamedTuple):
    """The SAEs' firings on the unseen documents, with their labels."""

    firings: dict[str, LayerFirings]
    vocab: dict[str, list[str]]
    documents: list[int]
    """Ids of the corpus documents read."""
    tokens: int
    """Tokens in their windows."""


def unseen_pass(lm: LM, saes: dict[str, Sae], info: AtlasInfo, texts: list[str], *,
                cache: str | None = None, medians: dict[str, float] | None = None
                ) -> UnseenPass | None:
    """Label the unseen documents of `texts` (the atlas's corpus) with spaCy (cached at
    `cache` when given) and run every SAE over them once (firings.collect_firings; `medians`
    default to the SAEs' metadata); None when
    the atlas's training windows are unknown or no document is unseen."""
    ids = unseen_documents(lm.tokenizer, texts, info)
    if not ids:
        return None
    chosen = [texts[i] for i in ids]
    data = (load_or_build_labels(lm.tokenizer, chosen, info.seq_len, cache) if cache
            else labelled_windows(lm.tokenizer, chosen, info.seq_len))
    firings = collect_firings(lm, saes, medians or medians_of(saes), data,
                              outlier_factor=info.outlier_factor)
    return UnseenPass(firings, data.vocab, ids, data.windows.numel())
