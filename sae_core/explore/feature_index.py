"""The feature index: top-activating contexts, quantile samples, density and activation
histogram of every feature of every layer, from one pass over corpus windows.

Method (seeds/001, seeds/003). Every indexed token is encoded by every layer's SAE through
the views' one encoding path (sae_core/encode.py: one precision, every firing latent, also
of ReLU and JumpReLU SAEs). Position 0 and massive activations (norm > outlier_factor x the
layer's median) are skipped, as in training. Then, per feature:
- a *context* is one chunk of `chunk` tokens of a window, and its activation is the
  feature's peak inside the chunk (one context per chunk, so the top list is not the same
  passage shifted by a token); the top `top_n` contexts rank by peak (ties: earlier token);
- quantile samples are contexts at given quantiles of the feature's context peaks, kept
  only when they fall outside the top list;
- for each context we store the feature's activation on `left` tokens before and `right`
  tokens after the peak (within the window, never position 0);
- density = tokens where it fires / tokens indexed; the histogram counts its non-zero
  activations in `hist_bins` log-spaced bins between its smallest and largest one.

Windows: the atlas's held-out windows (same split as build_atlas), then the layer
evidence's labelled windows (every 8th document: all genres; so the pass after training
reads them once for both, explore/one_pass.py), then training windows taken at an even
stride over the corpus up to `max_tokens`. Measured with
bench/features.py --coverage on the first default atlas (now default-v1): the 64 held-out
windows alone (16k tokens) give 20 or more contexts to 75% of the features (39% at layer 29,
whose features are rarer), 32k tokens 86% (53%), 65k tokens 93% (67%); on the current
default atlas 65k tokens give 88% (63% at layer 29). Which windows a context comes from
does not matter for reading a feature: the snippets show what the SAE responds to.

On disk, under <atlas>/features/: index.json (settings, tokens, coverage), tokens.safetensors
(the indexed windows' token ids) and one layers.N.safetensors per hookpoint, so a feature
page reads one layer only (through safetensors slices).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor

from ..atlas.fingerprint import file_sha256
from ..atlas.info import AtlasInfo
from ..atlas.layout import (
    INDEX_META_FILE,
    INDEX_TOKENS_FILE,
    current_fingerprint,
    fit_to,
    heldout_ids,
    index_dir,
    index_layer_file,
    load_atlas,
)
from ..atlas.writing import atlas_lock
from ..atomic import CorruptFile, read_json, save_tensors, write_json
from ..corpus import load_texts, token_windows
from ..encode import LayerCodes, encode_batch, pad_cat
from ..lm import LM, load_named
from ..model_controls import lm_for_atlas
from ..norms import medians_of
from ..progress import Report
from ..sae import Sae
from .feature_stats import IndexConfig, index_layer
from .firings import LABEL_DOC_STRIDE

log = logging.getLogger(__name__)


def index_windows(windows_WL: Tensor, heldout_ids: Tensor, max_tokens: int,
                  labelled_WL: Tensor | None = None) -> tuple[Tensor, dict]:
    """(windows to index, where they come from): the held-out windows first, then the
    labelled windows (`labelled_WL`: the layer evidence's, so one pass serves both), then
    evenly strided training windows, until `max_tokens`."""
    is_test = torch.zeros(len(windows_WL), dtype=torch.bool)  # cpu: rows of CPU windows
    is_test[heldout_ids] = True
    train, test = windows_WL[~is_test], windows_WL[is_test]
    seq_len = windows_WL.shape[1]
    room = max(0, max_tokens // seq_len - len(test))
    labelled = (labelled_WL if labelled_WL is not None else train[:0])[:room]
    n_extra = max(0, min(len(train), room - len(labelled)))
    stride = max(1, len(train) // max(n_extra, 1))
    extra = train[::stride][:n_extra]
    source = {"heldout_windows": len(test), "labelled_windows": len(labelled),
              "train_windows": len(extra), "train_stride": stride}
    return torch.cat([test, labelled, extra]), source


def atlas_index_windows(lm: LM, texts: list[str], info: AtlasInfo, max_tokens: int
                        ) -> tuple[Tensor, Tensor, dict]:
    """(the windows to index, all the labelled windows, where the first come from) for an
    atlas (`info`: its atlas.json) over its corpus `texts`: what this index and the pass
    after training (one_pass.py) both read."""
    windows = token_windows(lm.tokenizer, texts, info.seq_len)
    labelled = token_windows(lm.tokenizer, texts[::LABEL_DOC_STRIDE], info.seq_len)
    chosen, source = index_windows(windows, heldout_ids(info, windows), max_tokens, labelled)
    return chosen, labelled, source


class IndexCodes:
    """The index's codes of batches of windows, in order (what `collect_codes` returns)."""

    def __init__(self, hookpoints: list[str]):
        self.parts: dict[str, list[tuple[Tensor, Tensor]]] = {h: [] for h in hookpoints}
        self.kept = dict.fromkeys(hookpoints, 0)

    def add(self, codes: dict[str, LayerCodes]) -> None:
        for h, c in codes.items():
            self.parts[h].append((c.vals_BLK.flatten(0, 1), c.idx_BLK.flatten(0, 1).int()))
            self.kept[h] += int(c.keep_BL.sum())

    def result(self) -> dict[str, tuple[Tensor, Tensor, int]]:
        return {h: (*pad_cat(p), self.kept[h]) for h, p in self.parts.items()}


@torch.inference_mode()
def collect_codes(
    lm: LM, saes: dict[str, Sae], medians: dict[str, float], windows_WL: Tensor, *,
    outlier_factor: float, cfg: IndexConfig, report: Report | None = None,
) -> dict[str, tuple[Tensor, Tensor, int]]:
    """Per hookpoint (values (T, K) float32, ids (T, K) int32, tokens kept), T = all window
    tokens in order, K = the most latents firing on one token (encode.py); skipped tokens
    (position 0, massive) have all values 0."""
    codes = IndexCodes(list(saes))
    n = len(windows_WL)
    for start in range(0, n, cfg.batch):
        codes.add(encode_batch(lm, saes, windows_WL[start:start + cfg.batch], medians,
                               outlier_factor=outlier_factor))
        if report:
            done = min(start + cfg.batch, n)
            report(f"feature index: {done * windows_WL.shape[1]:,} tokens", done / n)
    return codes.result()


def read_index_meta(folder: Path) -> dict:
    """index.json of an atlas's feature index: settings, sources, tokens per layer."""
    return read_json(index_dir(folder) / INDEX_META_FILE)


def has_feature_index(folder: Path, fingerprint: str | None = None) -> bool:
    """Whether a whole feature index of the folder's current SAEs is on disk: index.json
    (written last) names the SAEs' fingerprint and each file's digest. A stale or damaged
    index counts as missing (damage is logged), so it is rebuilt, never read.
    `fingerprint`: the SAEs' as this request already checked it, else checked here."""
    folder = Path(folder)
    if not (index_dir(folder) / INDEX_META_FILE).exists():
        return False
    try:
        meta = read_index_meta(folder)
        if meta.get("sae_fingerprint") != (fingerprint or current_fingerprint(folder)):
            return False
        for rel, sha in meta["files"].items():
            if file_sha256(index_dir(folder) / rel) != sha:
                raise CorruptFile(f"{index_dir(folder) / rel} is damaged (digest differs)")
    except (CorruptFile, KeyError, OSError) as err:
        log.warning("feature index of %s is not usable: %s", folder, err)
        return False
    return True


def build_feature_index(
    lm: LM, saes: dict[str, Sae], medians: dict[str, float], windows_WL: Tensor,
    out: Path, *, outlier_factor: float, cfg: IndexConfig | None = None,
    source: dict | None = None, report: Report | None = None, fingerprint: str = "",
) -> dict:
    """Index `windows_WL` for every SAE and write <out>/features/ (index.json names
    `fingerprint`, the SAEs' fingerprint); returns index.json."""
    cfg = cfg or IndexConfig()
    t0 = time.perf_counter()
    codes = collect_codes(lm, saes, medians, windows_WL, outlier_factor=outlier_factor,
                          cfg=cfg, report=report)
    return write_feature_index(out, codes, windows_WL, saes, cfg=cfg, source=source,
                               fingerprint=fingerprint, pass_s=time.perf_counter() - t0)


def write_feature_index(
    out: Path, codes: dict[str, tuple[Tensor, Tensor, int]], windows_WL: Tensor,
    saes: dict[str, Sae], *, cfg: IndexConfig, source: dict | None, fingerprint: str,
    pass_s: float,
) -> dict:
    """Write <out>/features/ from the codes of `windows_WL` (`collect_codes`, or the pass
    after training: explore/one_pass.py); returns index.json."""
    t0 = time.perf_counter()
    folder = index_dir(out)
    (folder / INDEX_META_FILE).unlink(missing_ok=True)  # written last: marks a finished index
    save_tensors(folder / INDEX_TOKENS_FILE, {"tokens": windows_WL.int()})
    seq_len = windows_WL.shape[1]
    layers = {}
    for h, (vals, idx, n_kept) in codes.items():
        tensors = index_layer(vals, idx, saes[h].cfg.d_sae, seq_len, cfg)
        save_tensors(index_layer_file(out, h), tensors)
        n_ctx = tensors["n_ctx"]
        layers[h] = {"tokens": n_kept, "dead": int((tensors["n_fire"] == 0).sum()),
                     "with_top_n": int((n_ctx >= cfg.top_n).sum()),
                     "with_20": int((n_ctx >= 20).sum())}
    files = [INDEX_TOKENS_FILE, *(index_layer_file(out, h).name for h in codes)]
    meta = {"cfg": asdict(cfg), "seq_len": seq_len, "windows": len(windows_WL),
            "source": source or {}, "pass_seconds": pass_s,
            "seconds": pass_s + time.perf_counter() - t0, "layers": layers,
            "sae_fingerprint": fingerprint, "files": {f: file_sha256(folder / f) for f in files}}
    write_json(folder / INDEX_META_FILE, meta)
    return read_index_meta(out)


def ensure_feature_index(folder: Path, *, lm: LM | None = None, report: Report | None = None,
                         cfg: IndexConfig | None = None) -> dict:
    """The atlas's feature index (index.json contents), built once and cached on disk; a
    stale or damaged one is built again."""
    cfg = cfg or IndexConfig()
    folder = Path(folder)
    if has_feature_index(folder):
        return read_index_meta(folder)
    info, _, saes, fingerprint = load_atlas(folder)
    lm = lm_for_atlas(lm or load_named(info.model), info.control, info.control_seed)
    fit_to(saes, lm)
    chosen, _, source = atlas_index_windows(lm, load_texts(info.corpus), info,
                                            cfg.max_tokens)
    with atlas_lock(folder):
        return build_feature_index(
            lm, saes, medians_of(saes), chosen, folder, cfg=cfg, source=source, report=report,
            outlier_factor=info.outlier_factor, fingerprint=fingerprint)
