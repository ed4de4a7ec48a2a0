"""The feature index: top-activating contexts, quantile samples, density and activation
histogram of every feature of every layer, from one pass over corpus windows.

Method (seeds/001, seeds/003). Every indexed token is encoded by every layer's SAE and we
keep its k active latents (TopK SAEs; a ReLU SAE is read through its k strongest latents
per token, so its density counts only those). Position 0 and massive activations
(norm > outlier_factor x the layer's median) are skipped, as in training. Then, per feature:
- a *context* is one chunk of `chunk` tokens of a window, and its activation is the
  feature's peak inside the chunk (one context per chunk, so the top list is not the same
  passage shifted by a token); the top `top_n` contexts rank by peak (ties: earlier token);
- quantile samples are contexts at given quantiles of the feature's context peaks, kept
  only when they fall outside the top list;
- for each context we store the feature's activation on `left` tokens before and `right`
  tokens after the peak (within the window, never position 0);
- density = tokens where it fires / tokens indexed; the histogram counts its non-zero
  activations in `hist_bins` log-spaced bins between its smallest and largest one.

Windows: the atlas's held-out windows (same split as build_atlas), then training windows
taken at an even stride over the corpus (all genres) up to `max_tokens`. Measured with
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

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from .atlas import Report, check_fits, load_atlas, medians_of
from .corpus import load_texts, split_windows, token_windows
from .hooks import run_captured
from .lm import EMBEDDED, EMBEDDED_ID, LM, load_lm
from .sae import Sae
from .train import keep_mask

INDEX_DIR = "features"
META_FILE = "index.json"
TOKENS_FILE = "tokens.safetensors"


@dataclass(frozen=True)
class IndexConfig:
    top_n: int = 24
    """Top contexts kept per feature."""
    chunk: int = 32
    """Tokens per context: a feature's peak within each chunk of a window is one context."""
    left: int = 16
    """Tokens shown before the peak."""
    right: int = 8
    """Tokens shown after the peak."""
    quantiles: tuple[float, ...] = (0.75, 0.5, 0.25, 0.1)
    """Quantiles of a feature's context peaks to sample below the top list."""
    hist_bins: int = 24
    """Log-spaced bins of the activation histogram."""
    max_tokens: int = 65_536
    """Tokens indexed: the held-out windows first, then training windows (see module doc)."""
    batch: int = 8
    """Windows per forward pass."""
    bf16: bool = True
    """bf16 autocast for the forward and the SAE encoders (~3x faster on this CPU)."""

    def __post_init__(self) -> None:
        if min(self.top_n, self.chunk, self.hist_bins, self.batch) < 1:
            raise ValueError("top_n, chunk, hist_bins and batch must be at least 1")
        if self.left < 0 or self.right < 0:
            raise ValueError("left and right must be >= 0")
        if any(not 0 <= q <= 1 for q in self.quantiles):
            raise ValueError(f"quantiles must be in [0, 1], got {self.quantiles}")

    @property
    def width(self) -> int:
        """Tokens per stored snippet: left + peak + right."""
        return self.left + 1 + self.right


def index_windows(windows_WL: Tensor, held_out: int, max_tokens: int) -> tuple[Tensor, dict]:
    """(windows to index, where they come from): held-out first, then evenly strided
    training windows until `max_tokens`."""
    train, test = split_windows(windows_WL, held_out)
    seq_len = windows_WL.shape[1]
    n_extra = max(0, min(len(train), max_tokens // seq_len - len(test)))
    stride = max(1, len(train) // max(n_extra, 1))
    extra = train[::stride][:n_extra]
    source = {"heldout_windows": len(test), "train_windows": len(extra), "train_stride": stride}
    return torch.cat([test, extra]), source


def sparse_codes(sae: Sae, x_ND: Tensor, *, bf16: bool) -> tuple[Tensor, Tensor]:
    """(values, latent ids), each (n, k): the k strongest latents of every token."""
    k = sae.cfg.k if sae.cfg.architecture == "topk" else min(64, sae.cfg.d_sae)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        vals, idx = sae.encode_topk(x_ND, k)  # respects a JumpReLU threshold
    return vals.float(), idx


@torch.inference_mode()
def collect_codes(
    lm: LM, saes: dict[str, Sae], medians: dict[str, float], windows_WL: Tensor, *,
    outlier_factor: float, cfg: IndexConfig, report: Report | None = None,
) -> dict[str, tuple[Tensor, Tensor, int]]:
    """Per hookpoint (values (T, k) float32, ids (T, k) int32, tokens kept), T = all window
    tokens in order; skipped tokens (position 0, massive) have all values 0."""
    parts: dict[str, list[tuple[Tensor, Tensor]]] = {h: [] for h in saes}
    kept = dict.fromkeys(saes, 0)
    n = len(windows_WL)
    for start in range(0, n, cfg.batch):
        acts = run_captured(lm, windows_WL[start:start + cfg.batch], list(saes), bf16=cfg.bf16)
        for h, sae in saes.items():
            keep_BL = keep_mask(acts[h], medians[h], outlier_factor)
            x_ND = acts[h].flatten(0, 1)
            vals, idx = sparse_codes(sae, x_ND if cfg.bf16 else x_ND.float(), bf16=cfg.bf16)
            vals *= keep_BL.reshape(-1, 1)
            parts[h].append((vals, idx.int()))
            kept[h] += int(keep_BL.sum())
        if report:
            done = min(start + cfg.batch, n)
            report(f"feature index: {done * windows_WL.shape[1]:,} tokens", done / n)
    return {h: (torch.cat([v for v, _ in p]), torch.cat([i for _, i in p]), kept[h])
            for h, p in parts.items()}


def _descending(val: Tensor) -> Tensor:
    """int64 keys that sort positive float32 values from largest to smallest."""
    return 0x7FFFFFFF - val.float().view(torch.int32).long()


def index_layer(vals_TK: Tensor, idx_TK: Tensor, d_sae: int, seq_len: int,
                cfg: IndexConfig) -> dict[str, Tensor]:
    """Everything the feature pages need for one layer, from the sparse codes of T tokens
    (T = windows x seq_len, in window order). Exact; vectorised over features."""
    T, K = vals_TK.shape
    flat = (vals_TK > 0).view(-1).nonzero().squeeze(1)  # firings, in token order
    tok_M, feat_M = flat // K, idx_TK.view(-1)[flat].long()
    val_M = vals_TK.view(-1)[flat].float()
    n_fire_F = torch.bincount(feat_M, minlength=d_sae)

    # One context per (feature, chunk): its peak, ties going to the earlier token.
    per_window = -(-seq_len // cfg.chunk)
    n_chunks = (T // seq_len) * per_window
    key_M = feat_M * n_chunks + (tok_M // seq_len) * per_window + (tok_M % seq_len) // cfg.chunk
    peak_val = torch.zeros(d_sae * n_chunks).scatter_reduce_(0, key_M, val_M, "amax")
    at_peak = val_M == peak_val[key_M]
    peak_tok = torch.full((d_sae * n_chunks,), T, dtype=torch.int32).scatter_reduce_(
        0, key_M[at_peak], tok_M[at_peak].int(), "amin")
    p_key = (peak_val > 0).nonzero().squeeze(1)  # (feature, chunk) order
    p_feat, p_tok, p_val = p_key // n_chunks, peak_tok[p_key].long(), peak_val[p_key]
    # Contexts of each feature, strongest first; the stable sort keeps token order on ties.
    by_rank = ((p_feat << 31) | _descending(p_val)).sort(stable=True).indices
    p_feat, p_tok, p_val = p_feat[by_rank], p_tok[by_rank], p_val[by_rank]
    n_ctx_F = torch.bincount(p_feat, minlength=d_sae)
    start_F = torch.cumsum(n_ctx_F, 0) - n_ctx_F
    rank_P = torch.arange(len(p_feat)) - start_F[p_feat]

    top = rank_P < cfg.top_n
    top_tok = torch.full((d_sae, cfg.top_n), -1, dtype=torch.long)
    top_val = torch.zeros(d_sae, cfg.top_n)
    top_tok[p_feat[top], rank_P[top]] = p_tok[top]
    top_val[p_feat[top], rank_P[top]] = p_val[top]

    n_q = len(cfg.quantiles)
    q_tok = torch.full((d_sae, n_q), -1, dtype=torch.long)
    q_val = torch.zeros(d_sae, n_q)
    for j, q in enumerate(cfg.quantiles):
        r_F = torch.round((1 - q) * (n_ctx_F - 1).clamp_min(0)).long()
        ok = (n_ctx_F > 0) & (r_F >= cfg.top_n)
        pos = (start_F + r_F)[ok]
        q_tok[ok, j], q_val[ok, j] = p_tok[pos], p_val[pos]

    hist, lo, hi = _histograms(feat_M, val_M, d_sae, cfg.hist_bins)
    keys, order = (feat_M * T + tok_M).sort()
    by_feature = (keys, val_M[order])
    return {
        "top_tok": top_tok.int(), "top_val": top_val,
        "top_acts": _snippet_acts(top_tok, by_feature, T, seq_len, cfg).half(),
        "q_tok": q_tok.int(), "q_val": q_val,
        "q_acts": _snippet_acts(q_tok, by_feature, T, seq_len, cfg).half(),
        "n_fire": n_fire_F, "n_ctx": n_ctx_F, "hist": hist, "hist_lo": lo, "hist_hi": hi,
    }


def snippet_offsets(cfg: IndexConfig) -> Tensor:
    return torch.arange(-cfg.left, cfg.right + 1)


def _snippet_acts(tok_FS: Tensor, by_feature: tuple[Tensor, Tensor], T: int, seq_len: int,
                  cfg: IndexConfig) -> Tensor:
    """(F, S, width) activation of feature f on the tokens around each context's peak; 0
    outside the window, at position 0 and where it does not fire.

    `by_feature` = (keys, values) of all firings sorted by key feature * T + token: a
    feature's firings in a snippet are then among the `width` entries from the first key
    >= (f, peak - left), so one binary search per context finds them all."""
    keys, vals = by_feature
    F, S = tok_FS.shape
    out = torch.zeros(F, S, cfg.width)
    if not len(keys):
        return out
    first_FS = tok_FS - cfg.left
    feat_F1 = torch.arange(F).view(F, 1)
    at = torch.searchsorted(keys, feat_F1 * T + first_FS)
    cand = at.unsqueeze(-1) + torch.arange(cfg.width)
    inside = cand < len(keys)
    cand = cand.clamp_max(len(keys) - 1)
    key = keys[cand]
    off = key - (feat_F1 * T + first_FS).unsqueeze(-1)  # token - (peak - left)
    tok = key % T
    ok = inside & (key // T == feat_F1.unsqueeze(-1)) & (off >= 0) & (off < cfg.width)
    ok &= (tok // seq_len == (tok_FS // seq_len).unsqueeze(-1)) & (tok % seq_len > 0)
    ok &= (tok_FS >= 0).unsqueeze(-1)
    return out.scatter_add_(2, off.clamp(0, cfg.width - 1), vals[cand] * ok)


def _histograms(feat_M: Tensor, val_M: Tensor, d_sae: int, bins: int):
    """(F, bins) counts of non-zero activations, log-spaced between each feature's min and
    max (all in the first bin when they are equal), and those (F,) bounds."""
    lo = torch.full((d_sae,), float("inf")).scatter_reduce(0, feat_M, val_M, "amin")
    hi = torch.zeros(d_sae).scatter_reduce(0, feat_M, val_M, "amax")
    lo = torch.where(torch.isinf(lo), 0.0, lo)
    span = (hi.log() - lo.log())[feat_M]
    frac = torch.where(span > 0, (val_M.log() - lo.log()[feat_M]) / span, 0.0)
    b = (frac * bins).long().clamp(0, bins - 1)
    hist = torch.bincount(feat_M * bins + b, minlength=d_sae * bins).view(d_sae, bins)
    return hist.int(), lo, hi


def hist_edges(lo: float, hi: float, bins: int) -> list[float]:
    """The bin edges `_histograms` used for a feature with activations in [lo, hi]."""
    if not 0 < lo < hi:
        return [lo, hi] + [hi] * (bins - 1)
    return torch.logspace(torch.tensor(lo).log10(), torch.tensor(hi).log10(), bins + 1).tolist()


def index_dir(folder: Path) -> Path:
    return Path(folder) / INDEX_DIR


def layer_file(folder: Path, hookpoint: str) -> Path:
    return index_dir(folder) / f"{hookpoint}.safetensors"


def has_feature_index(folder: Path) -> bool:
    return (index_dir(folder) / META_FILE).exists()


def build_feature_index(
    lm: LM, saes: dict[str, Sae], medians: dict[str, float], windows_WL: Tensor,
    out: Path, *, outlier_factor: float, cfg: IndexConfig = IndexConfig(),
    source: dict | None = None, report: Report | None = None,
) -> dict:
    """Index `windows_WL` for every SAE and write <out>/features/; returns index.json."""
    t0 = time.perf_counter()
    codes = collect_codes(lm, saes, medians, windows_WL, outlier_factor=outlier_factor,
                          cfg=cfg, report=report)
    pass_s = time.perf_counter() - t0
    folder = index_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / META_FILE).unlink(missing_ok=True)  # written last: marks a finished index
    save_file({"tokens": windows_WL.int().contiguous()}, str(folder / TOKENS_FILE))
    seq_len = windows_WL.shape[1]
    layers = {}
    for h, (vals, idx, n_kept) in codes.items():
        tensors = index_layer(vals, idx, saes[h].cfg.d_sae, seq_len, cfg)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(layer_file(out, h)))
        n_ctx = tensors["n_ctx"]
        layers[h] = {"tokens": n_kept, "dead": int((tensors["n_fire"] == 0).sum()),
                     "with_top_n": int((n_ctx >= cfg.top_n).sum()),
                     "with_20": int((n_ctx >= 20).sum())}
    meta = {"cfg": asdict(cfg), "seq_len": seq_len, "windows": len(windows_WL),
            "source": source or {}, "pass_seconds": pass_s,
            "seconds": time.perf_counter() - t0, "layers": layers}
    text = json.dumps(meta, indent=1)
    (folder / META_FILE).write_text(text)
    return json.loads(text)


def ensure_feature_index(folder: Path, *, lm: LM | None = None, report: Report | None = None,
                         cfg: IndexConfig = IndexConfig()) -> dict:
    """The atlas's feature index (index.json contents), built once and cached on disk."""
    folder = Path(folder)
    if has_feature_index(folder):
        return json.loads((index_dir(folder) / META_FILE).read_text())
    info, _, saes = load_atlas(folder)
    lm = lm or load_lm(EMBEDDED if info["model"] == EMBEDDED_ID else info["model"])
    check_fits(saes, lm)
    windows = token_windows(lm.tokenizer, load_texts(info["corpus"]), info["seq_len"])
    chosen, source = index_windows(windows, info["heldout_windows"], cfg.max_tokens)
    return build_feature_index(
        lm, saes, medians_of(saes), chosen, folder, cfg=cfg, source=source, report=report,
        outlier_factor=info["train_cfg"]["outlier_factor"])
