"""What the feature index stores for each feature of one layer, computed from the sparse
codes of the indexed tokens: top contexts, quantile samples, the activations around each
context's peak, firing counts and a log-spaced activation histogram. Pure tensor code,
exact and vectorised over features (the method is in feature_index.py's docstring).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


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
    """Windows per forward pass (the precision is the views' one, sae_core/encode.py)."""

    def __post_init__(self) -> None:
        if min(self.top_n, self.chunk, self.hist_bins, self.batch) < 1:
            raise ValueError("top_n, chunk, hist_bins and batch must be at least 1")
        if self.left < 0 or self.right < 0:
            raise ValueError("left and right must be >= 0")
        if any(not 0 <= q <= 1 for q in self.quantiles):
            raise ValueError(f"quantiles must be in [0, 1], got {self.quantiles}")

    @classmethod
    def from_dict(cls, saved: dict) -> IndexConfig:
        """The config an index.json recorded; keys of older versions (`bf16`) are ignored."""
        known = {f.name for f in fields(cls)}
        kept = {k: v for k, v in saved.items() if k in known}
        return cls(**kept | {"quantiles": tuple(kept.get("quantiles", cls.quantiles))})

    @property
    def width(self) -> int:
        """Tokens per stored snippet: left + peak + right."""
        return self.left + 1 + self.right


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
