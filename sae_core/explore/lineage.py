"""Features followed through the layers. For every pair of adjacent hookpoints (a, b) of a
set (consecutive layers of one site: residual to residual, MLP output to MLP output, never
across sites; `adjacent`) we keep, for each feature of a, its m closest features of b
("up"), and for each feature of b its m closest of a ("down"), ranked two ways, each entry
carrying both numbers:
- `cosine`: cosine of the decoder rows (W_dec is (d_sae, d_in));
- `coact`: Jaccard of their firing sets on the labelled tokens (LayerFirings), tokens matched
  across layers by `where_N`; a token one layer dropped counts as not firing there.
Turnover: per layer, the share of its alive features with an alive partner of decoder
cosine > CLOSE in the next layer (and in the layer below): a dead partner carries nothing.
Stored in the atlas folder, keyed by the SAE fingerprint like the layer map."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..activations import layer_of, parse_hookpoint
from ..atlas.layout import LINEAGE_FILE, read_derived
from ..atomic import load_tensors, read_json, save_tensors, write_json
from ..sae import Sae
from ..stats import share_interval
from .firings import LayerFirings

DIRECTIONS = ("up", "down")
RANKINGS = ("cosine", "coact")
CLOSE = 0.7
"""Decoder cosine above which a feature counts as carried on in the other layer."""
PAIRS_PER_CHUNK = 1 << 26  # token x firing x firing pairs counted at once (int32: 256 MB)
TOP_GROUPS = 8

Neighbour = tuple[int, float, float | None]
"""(feature of the other layer, decoder cosine, Jaccard or None without firings)."""


@dataclass
class LineageData:
    hookpoints: list[str]
    m: int
    tables: dict[str, Tensor]
    """f"{hookpoint}/{direction}/{by}/idx|cos|jac" -> (d_sae, m): each feature's m closest in
    the adjacent layer, best first; idx -1 for `coact` partners that never fire with it;
    jac NaN without firings."""
    turnover_up: list[float | None]
    """Per hookpoint: share of alive features carried on in the next layer of its site
    (None: last)."""
    turnover_down: list[float | None]
    """Per hookpoint: share that have a close partner in the layer below (None: first)."""
    has_coact: bool
    sae_fingerprint: str = ""
    close: float = CLOSE
    alive: list[int] = field(default_factory=list)
    """Per hookpoint: features that fired on the labelled tokens (the turnover's
    denominator; [] for an older lineage)."""

    def neighbours(self, hookpoint: str, feature: int, direction: str = "up",
                   by: str = "cosine") -> list[Neighbour]:
        """The feature's closest features in the layer above ("up") or below ("down"), best
        first; [] at the top (or bottom) of the set."""
        if hookpoint not in self.hookpoints:
            raise ValueError(f"{hookpoint!r} is not in this lineage")
        if direction not in DIRECTIONS or by not in RANKINGS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, by one of {RANKINGS}")
        if by == "coact" and not self.has_coact:
            raise ValueError("this lineage was computed without firings: rank by cosine")
        key = f"{hookpoint}/{direction}/{by}"
        if f"{key}/idx" not in self.tables:
            return []
        idx = self.tables[f"{key}/idx"]
        if not 0 <= feature < len(idx):
            raise ValueError(f"{hookpoint} has no feature {feature} (0..{len(idx) - 1})")
        cos, jac = self.tables[f"{key}/cos"][feature], self.tables[f"{key}/jac"][feature]
        return [(i, float(c), None if math.isnan(j) else float(j))
                for i, c, j in zip(idx[feature].tolist(), cos.tolist(), jac.tolist(),
                                   strict=True) if i >= 0]

    def turnover(self) -> dict[str, list[float | None]]:
        """Per hookpoint (in order): "up", the share of its alive features carried on in the
        next layer; "down", the share with a close partner in the layer below."""
        return {"up": list(self.turnover_up), "down": list(self.turnover_down)}

    def turnover_bands(self) -> dict[str, list[tuple[float, float] | tuple[None, None]]]:
        """The same keys: per hookpoint the 95% interval of the share when the layer's alive
        features are drawn again (stats.share_interval; turnover reads decoder weights, not
        documents); {} for an older lineage without alive counts."""
        if not self.alive:
            return {}
        return {key: [(None, None) if s is None else share_interval(round(s * n), n)
                      for s, n in zip(shares, self.alive, strict=True)]
                for key, shares in self.turnover().items()}

    def save(self, path: Path) -> None:
        """The tables, then the .json (the marker of a whole product), each atomically."""
        path = Path(path)
        path.with_suffix(".json").unlink(missing_ok=True)
        save_tensors(path, {k: v.half() if v.is_floating_point() else v
                            for k, v in self.tables.items()})
        meta = {"hookpoints": self.hookpoints, "m": self.m, "close": self.close,
                "has_coact": self.has_coact, "sae_fingerprint": self.sae_fingerprint,
                "turnover": self.turnover(), "alive": self.alive}
        write_json(path.with_suffix(".json"), meta, indent=None)

    @classmethod
    def load(cls, path: Path) -> LineageData:
        """CorruptFile when either file is truncated or damaged."""
        path = Path(path)
        meta = read_json(path.with_suffix(".json"))
        tables = {k: v.float() if v.is_floating_point() else v
                  for k, v in load_tensors(path).items()}
        return cls(meta["hookpoints"], meta["m"], tables, meta["turnover"]["up"],
                   meta["turnover"]["down"], meta["has_coact"],
                   sae_fingerprint=meta["sae_fingerprint"], close=meta["close"],
                   alive=meta.get("alive", []))


@torch.inference_mode()
def compute_lineage(saes: dict[str, Sae], firings: dict[str, LayerFirings] | None = None,
                    m: int = 5, *, close: float = CLOSE) -> LineageData:
    """Closest features between adjacent layers of each site (`adjacent`) and the turnover."""
    hooks = list(saes)
    if firings is not None and (missing := [h for h in hooks if h not in firings]):
        raise ValueError(f"no firings for {missing}")
    dirs = {h: F.normalize(saes[h].W_dec.detach().float(), dim=1).bfloat16() for h in hooks}
    if len({d.shape[1] for d in dirs.values()}) > 1:
        raise ValueError("the SAEs decode to different widths: not layers of one model")
    n_fired = {h: torch.bincount(firings[h].idx_NK[firings[h].valid_NK],  # tokens fired on
                                 minlength=firings[h].d_sae).float() if firings else None
               for h in hooks}
    alive = {h: n_fired[h] > 0 if firings
             else torch.ones(len(dirs[h]), dtype=torch.bool)  # cpu: as the CPU cosines
             for h in hooks}
    tables: dict[str, Tensor] = {}
    up: list[float | None] = [None] * len(hooks)
    down: list[float | None] = [None] * len(hooks)
    for a, b in adjacent(hooks):
        # bf16: 4x faster than fp32, cosines within ~0.004 (and stored as fp16)
        cos_AB = (dirs[a] @ dirs[b].T).cpu()  # on the SAEs' device; kept with CPU firings
        jac_AB = _jaccard(firings[a], firings[b], n_fired[a], n_fired[b]) if firings else None
        tables |= _top_tables(f"{a}/up", cos_AB, jac_AB, m, dim=1)
        tables |= _top_tables(f"{b}/down", cos_AB, jac_AB, m, dim=0)
        up[hooks.index(a)], down[hooks.index(b)] = _carried(cos_AB, alive[a], alive[b], close)
    return LineageData(hooks, m, tables, up, down, firings is not None, close=close,
                       alive=[int(alive[h].sum()) for h in hooks])


def adjacent(hookpoints: list[str]) -> list[tuple[str, str]]:
    """(a, b) for each hookpoint a and the next deeper one of its site in the set: features
    are followed within a site; a residual feature and an MLP-output one are not layers of
    one stream."""
    sites: dict[str, list[str]] = {}
    for h in hookpoints:
        sites.setdefault(parse_hookpoint(h)[1], []).append(h)
    return [pair for group in sites.values()
            for pair in itertools.pairwise(sorted(group, key=layer_of))]


def common_rows(where_a: Tensor, where_b: Tensor) -> tuple[Tensor, Tensor]:
    """Rows of layer a and of layer b holding the same tokens, matched pairwise (a lookup
    table over positions: no sort)."""
    zero = torch.zeros(1, dtype=where_a.dtype)  # cpu: firings are on the CPU
    size = int(torch.cat([where_a, where_b, zero]).max()) + 1
    row_of_b = torch.full((size,), -1, dtype=torch.int64)  # cpu: firings are on the CPU
    row_of_b[where_b] = torch.arange(len(where_b))  # cpu: firings are on the CPU
    rows_b = row_of_b[where_a]
    shared = rows_b >= 0
    return shared.nonzero().squeeze(1), rows_b[shared]


def co_firing_counts(fa: LayerFirings, fb: LayerFirings) -> Tensor:
    """(d_sae a, d_sae b) int32: tokens on which both features fire. Counted over each
    shared token's (firing in a, firing in b) pairs, never a dense token matrix; padding
    slots go to a spare row and column that are cut off. Pairs are sorted by the feature of
    a first, so the counts are written row by row (3x faster than in token order)."""
    rows_a, rows_b = common_rows(fa.where_N, fb.where_N)
    width = fb.d_sae + 1
    n_bins = (fa.d_sae + 1) * width
    dtype = torch.int32 if n_bins < 2**31 else torch.int64
    ia_NK = torch.where(fa.valid_NK[rows_a], fa.idx_NK[rows_a], fa.d_sae).to(dtype) * width
    ib_NK = torch.where(fb.valid_NK[rows_b], fb.idx_NK[rows_b], fb.d_sae).to(dtype)
    k_a = max(1, ia_NK.shape[1])
    chunk = max(1, PAIRS_PER_CHUNK // (k_a * max(1, ib_NK.shape[1])))
    counts = torch.zeros(n_bins, dtype=torch.int32)  # cpu: firings are on the CPU
    one = torch.ones((), dtype=torch.int32)  # cpu: firings are on the CPU
    for s in range(0, len(ia_NK), chunk):
        a_sorted, order = ia_NK[s:s + chunk].flatten().sort()
        flat = (a_sorted[:, None] + ib_NK[s:s + chunk].index_select(0, order // k_a)).flatten()
        counts.index_add_(0, flat, one.expand(len(flat)))
    return counts.view(fa.d_sae + 1, width)[:-1, :-1]


def _jaccard(fa: LayerFirings, fb: LayerFirings, n_a: Tensor, n_b: Tensor) -> Tensor:
    """(d_sae a, d_sae b) float32 Jaccard of the firing sets (0 when neither fires)."""
    inter = co_firing_counts(fa, fb).float()
    union = n_a[:, None] + n_b[None, :]
    union.sub_(inter).clamp_min_(1)
    return inter.div_(union)


def _top_tables(key: str, cos_AB: Tensor, jac_AB: Tensor | None, m: int,
                dim: int) -> dict[str, Tensor]:
    """For each feature of a (dim=1) or of b (dim=0): its m best partners by cosine and,
    with firings, by Jaccard, each with both numbers."""
    m = min(m, cos_AB.shape[dim])
    cos, idx = top_m(cos_AB, m, dim)
    out = {f"{key}/cosine/idx": idx.int(), f"{key}/cosine/cos": cos.float()}
    if jac_AB is None:
        return out | {f"{key}/cosine/jac": torch.full(idx.shape, math.nan)}  # cpu: as cos_AB
    jac, jidx = top_m(jac_AB, m, dim)
    return out | {f"{key}/cosine/jac": _pick(jac_AB, idx, dim),
                  f"{key}/coact/idx": jidx.masked_fill(jac <= 0, -1).int(),
                  f"{key}/coact/cos": _pick(cos_AB, jidx, dim).float(),
                  f"{key}/coact/jac": jac}


def _pick(x_AB: Tensor, idx_NM: Tensor, dim: int) -> Tensor:  # x at the chosen partners
    return x_AB.gather(1, idx_NM) if dim == 1 else x_AB.gather(0, idx_NM.T).T


def top_m(x: Tensor, m: int, dim: int) -> tuple[Tensor, Tensor]:
    """(values, indices), each (lines, m), best first: the m largest entries of each row
    (dim=1) or each column (dim=0) of a 2-D tensor; 2x (rows) to 4x (columns) faster than
    topk. Each line is split into TOP_GROUPS interleaved groups (entry i in group i % step);
    the m best entries lie in the m groups with the largest maxima: topk runs on those.

    Not topk.py's rule on purpose: this ranks partners on a similarity matrix (not an
    SAE's latents per token), and its ties follow torch.topk. The bf16 cosines tie often:
    the lowest-id rule would pick other partners for ~3-6% of table entries and change
    the lineage.safetensors of every built atlas."""
    n, step = x.shape[dim], x.shape[dim] // TOP_GROUPS
    if n % TOP_GROUPS or step < m:
        vals, idx = x.topk(m, dim=dim)
        return (vals, idx) if dim == 1 else (vals.T, idx.T)
    groups = x.unflatten(dim, (TOP_GROUPS, step))  # (n, G, step) or (G, step, n)
    if dim == 1:
        best = groups.amax(1).topk(m, dim=1).indices  # (n, m) group ids
        cand = groups.gather(2, best[:, None, :].expand(-1, TOP_GROUPS, -1)).flatten(1)
        vals, j = cand.topk(m, dim=1)
        return vals, (j // m) * step + best.gather(1, j % m)
    best = groups.amax(0).topk(m, dim=0).indices  # (m, n)
    cand = groups.gather(1, best[None].expand(TOP_GROUPS, -1, -1)).flatten(0, 1)
    vals, j = cand.topk(m, dim=0)
    return vals.T, ((j // m) * step + best.gather(0, j % m)).T


def _carried(cos_AB: Tensor, alive_a: Tensor, alive_b: Tensor,
             close: float) -> tuple[float | None, float | None]:
    """(share of a's alive features with an alive close partner in b, the same for b in a);
    None for a layer without alive features. Overwrites `cos_AB`."""
    cos_AB[~alive_a] = -1.0
    cos_AB[:, ~alive_b] = -1.0
    shares = [(best > close).float().mean() for best in (cos_AB.amax(1)[alive_a],
                                                          cos_AB.amax(0)[alive_b])]
    return tuple(None if s.isnan() else float(s) for s in shares)


def read_lineage(folder: Path | str | None, fingerprint: str | None = None
                 ) -> LineageData | None:
    """The current lineage of an atlas folder, or None (atlas/layout.read_derived)."""
    return read_derived(folder, LINEAGE_FILE, LineageData.load, fingerprint)
