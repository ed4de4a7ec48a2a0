"""Text sources (bundled corpus, local file, Hub dataset) and fixed-length token windows."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from .errors import BadInput, check_repo_id

DEFAULT_CORPUS = Path(__file__).resolve().parents[1] / "assets" / "corpus.jsonl"


def _read_jsonl(path: Path) -> list[str]:
    texts = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{n}: not valid JSON ({err.msg})") from err
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise ValueError(f"{path}:{n}: each line needs a string field 'text'")
        texts.append(row["text"])
    return texts


def _read_hub_dataset(repo_id: str, max_files: int = 1) -> list[str]:
    """First text-like file(s) of a Hub dataset (jsonl or txt), through huggingface_hub;
    the id is checked before any request."""
    from huggingface_hub import hf_hub_download, list_repo_files

    repo_id = check_repo_id(repo_id, "corpus dataset id")
    try:
        files = [f for f in list_repo_files(repo_id, repo_type="dataset")
                 if f.endswith((".jsonl", ".txt"))][:max_files]
    except Exception as err:  # offline, missing repo, auth: one message
        raise ValueError(f"could not reach dataset {repo_id!r} on the Hub: {err}") from err
    if not files:
        raise ValueError(f"dataset {repo_id!r} has no .jsonl or .txt file")
    texts: list[str] = []
    for name in files:
        path = Path(hf_hub_download(repo_id, name, repo_type="dataset"))
        texts += _read_jsonl(path) if name.endswith(".jsonl") else _split_paragraphs(path)
    return texts


def _split_paragraphs(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    return [p.strip() for p in text.split("\n\n") if p.strip()]


def load_texts(source: str = "default") -> list[str]:
    """Documents from `default` (assets/corpus.jsonl), a .txt/.jsonl file or a Hub dataset id."""
    if not isinstance(source, str) or not source.strip():
        raise BadInput("corpus", f"corpus must be 'default', a file or a Hub dataset id, got "
                                 f"{source!r:.40}")
    if source == "default":
        return _read_jsonl(DEFAULT_CORPUS)
    path = Path(source)
    if path.suffix in (".txt", ".jsonl", ".json"):
        if not path.is_file():
            raise ValueError(f"corpus file {source!r} does not exist")
        texts = _read_jsonl(path) if path.suffix != ".txt" else _split_paragraphs(path)
    else:
        texts = _read_hub_dataset(source)
    if not texts:
        raise ValueError(f"corpus {source!r} holds no text")
    return texts


def token_windows(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], seq_len: int, *,
    prepend_bos: bool | None = None,
) -> Tensor:
    """(n_windows, seq_len) token ids: documents joined by EOS, cut into fixed windows.

    With `prepend_bos` (default: when the tokenizer has a BOS token), every window starts
    with BOS. Either way position 0 of a window is special to the model (massive
    activations in SmolLM2), so training and evaluation skip it.
    """
    bos = bos_id(tokenizer, prepend_bos)
    sep = tokenizer.eos_token_id
    ids: list[int] = []
    for enc in tokenizer(texts, add_special_tokens=False).input_ids:
        ids.extend(enc)
        if sep is not None:
            ids.append(sep)
    return cut_windows(torch.tensor(ids, dtype=torch.long), seq_len, bos)


def bos_id(tokenizer: PreTrainedTokenizerBase, prepend_bos: bool | None) -> int | None:
    """The BOS id to start windows with, or None; `prepend_bos=None` means "if it has one"."""
    bos = tokenizer.bos_token_id if prepend_bos is not False else None
    if prepend_bos and bos is None:
        raise ValueError("prepend_bos=True but the tokenizer has no BOS token")
    return bos


def cut_windows(flat_T: Tensor, seq_len: int, first: int | None) -> Tensor:
    """Cut a flat sequence into (n, seq_len) windows, each starting with `first` if given.

    Token ids and per-token labels go through this same cut, so they stay aligned.
    """
    body = seq_len - (first is not None)
    n = len(flat_T) // body
    windows = flat_T[: n * body].reshape(n, body)
    if first is not None:
        windows = torch.cat([torch.full((n, 1), first, dtype=flat_T.dtype), windows], dim=1)
    return windows


def split_ids(n_windows: int, held_out: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(train ids, held-out ids), each sorted: `held_out` of `n_windows` drawn at random
    (seeded), never trained on. At random, not from the end, so every genre is held out."""
    if not 0 < held_out < n_windows:
        raise ValueError(f"held_out must be in 1..{n_windows - 1}, got {held_out}")
    order = torch.randperm(n_windows, generator=torch.Generator().manual_seed(seed))
    return order[held_out:].sort().values, order[:held_out].sort().values


def split_windows(windows: Tensor, held_out: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(train, held-out) windows, as `split_ids` draws them."""
    train_ids, test_ids = split_ids(len(windows), held_out, seed)
    return windows[train_ids], windows[test_ids]
