"""Everything one feature's page shows, as plain data, read from the feature index.

`feature_page(loaded_atlas, hookpoint, feature)` reads one row of one layer's index file
(safetensors slices, no full load), decodes the snippets and runs the logit lens: a few
milliseconds. Bad ids raise ValueError with a message for the user.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from ..activations import layer_name
from ..atlas.layout import (
    INDEX_META_FILE,
    INDEX_TOKENS_FILE,
    LoadedAtlas,
    index_dir,
    index_layer_file,
    read_once,
)
from ..atomic import load_tensors
from ..errors import BadInput, check_whole
from .feature_index import has_feature_index, read_index_meta
from .feature_stats import IndexConfig, hist_edges
from .layermap import read_layer_map
from .logit_lens import logit_lens

N_LOGITS = 10


@dataclass(frozen=True)
class Snippet:
    pieces: tuple[str, ...]
    """Per token, its text; "".join(pieces) is the decoded snippet. A character split over
    several tokens (emoji, some accents) goes to the first of them; the others get ""."""
    acts: tuple[float, ...]
    """The feature's activation on each token (0 where it does not fire)."""
    peak: int
    """Index in `pieces` of the token with the context's peak activation."""
    value: float
    """The peak activation."""
    window: int
    position: int
    """Where the peak is: window of the index and position in it."""
    quantile: float | None = None
    """For quantile samples: the quantile of the feature's context peaks."""


@dataclass(frozen=True)
class LabelInfo:
    task: str
    label: str
    consistency: float
    support: int
    lift: float


@dataclass(frozen=True)
class FeaturePage:
    hookpoint: str
    feature: int
    d_sae: int
    n_tokens: int
    """Tokens indexed at this layer (position 0 and massive activations excluded)."""
    n_fire: int
    """Indexed tokens where the feature fires."""
    n_contexts: int
    """Chunks of `IndexConfig.chunk` tokens where it fires."""
    max_act: float
    hist_counts: tuple[int, ...]
    hist_edges: tuple[float, ...]
    """Log-spaced bins of its non-zero activations: len(edges) == len(counts) + 1."""
    promoted: tuple[tuple[str, float], ...]
    """(token text, logit score) of the tokens its decoder direction promotes most."""
    suppressed: tuple[tuple[str, float], ...]
    top: tuple[Snippet, ...]
    """Top-activating contexts, strongest first."""
    samples: tuple[Snippet, ...]
    """Contexts at lower quantiles of its activation."""
    labels: tuple[LabelInfo, ...]
    """Per labelling task, its layer-map label (empty without a layer map)."""

    @property
    def density(self) -> float:
        return self.n_fire / max(self.n_tokens, 1)

    @property
    def dead(self) -> bool:
        return self.n_fire == 0


class FeatureIndex:
    """An atlas's feature index on disk; per-layer statistics load once, rows on demand."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.meta = read_index_meta(folder)
        self.cfg = IndexConfig.from_dict(self.meta["cfg"])
        self.tokens_WL = load_tensors(index_dir(folder) / INDEX_TOKENS_FILE)["tokens"]
        self._stats: dict[str, dict[str, torch.Tensor]] = {}
        self._lock = threading.Lock()

    def n_tokens(self, hookpoint: str) -> int:
        return self.meta["layers"][hookpoint]["tokens"]

    def layer_stats(self, hookpoint: str) -> dict[str, torch.Tensor]:
        """`n_fire` and `n_ctx`, (d_sae,) each, for the density plot and random picks."""
        with self._lock:
            if hookpoint not in self._stats:
                with safe_open(str(index_layer_file(self.folder, hookpoint)), "pt") as f:
                    self._stats[hookpoint] = {k: f.get_tensor(k) for k in ("n_fire", "n_ctx")}
            return self._stats[hookpoint]

    def row(self, hookpoint: str, feature: int) -> dict[str, torch.Tensor]:
        with safe_open(str(index_layer_file(self.folder, hookpoint)), "pt") as f:
            return {k: f.get_slice(k)[feature] for k in f.keys()}  # noqa: SIM118


def open_index(folder: Path | str, fingerprint: str | None = None) -> FeatureIndex:
    """The folder's feature index, opened once (re-opened if it was rebuilt); `fingerprint`
    as has_feature_index takes it."""
    folder = Path(folder).resolve()
    if not has_feature_index(folder, fingerprint):
        raise FileNotFoundError(f"{folder} has no feature index yet")
    return read_once(index_dir(folder) / INDEX_META_FILE, lambda: FeatureIndex(folder))


def token_pieces(tokenizer, ids: list[int]) -> list[str]:
    """Per token, the text it adds to the decoded sequence; pieces join into decode(ids).

    Decoding growing prefixes (one batched call) keeps byte-level tokens that hold only part
    of a character from showing as replacement characters: such a run's text goes to its
    first token.
    """
    if not ids:
        return []
    prefixes = tokenizer.batch_decode([ids[:i + 1] for i in range(len(ids))],
                                      clean_up_tokenization_spaces=False)
    pieces, done, run_start = [], "", None
    for i, text in enumerate(prefixes):
        pieces.append("")
        if text.endswith("\ufffd") and i < len(ids) - 1:
            run_start = i if run_start is None else run_start
            continue
        pieces[i if run_start is None else run_start] = text[len(done):]
        done, run_start = text, None
    return pieces


def _snippet(index: FeatureIndex, tokenizer, tok: int, value: float, acts_W: torch.Tensor,
             quantile: float | None = None) -> Snippet:
    seq_len = index.tokens_WL.shape[1]
    window, pos = divmod(tok, seq_len)
    cfg = index.cfg
    lo, hi = max(pos - cfg.left, 1), min(pos + cfg.right, seq_len - 1)
    ids = index.tokens_WL[window, lo:hi + 1].tolist()
    acts = acts_W[lo - pos + cfg.left: hi - pos + cfg.left + 1].float()
    return Snippet(tuple(token_pieces(tokenizer, ids)), tuple(acts.tolist()),
                   pos - lo, value, window, pos, quantile)


def check_ids(loaded: LoadedAtlas, hookpoint: str, feature) -> int:
    """The feature id as an int, or BadInput (a ValueError) saying what is allowed. A
    string of digits ("5", from a link or a form) counts as that number."""
    if not isinstance(hookpoint, str) or hookpoint not in loaded.saes:
        layers = ", ".join(layer_name(h) for h in loaded.hookpoints)
        raise BadInput("layer", f"{hookpoint!r:.40} is not in this SAE set; its layers are "
                                f"{layers}")
    d_sae = loaded.saes[hookpoint].cfg.d_sae
    try:
        return check_whole(feature, "feature", 0, d_sae - 1, from_text=True)
    except BadInput:
        raise BadInput("feature", f"feature {feature!r:.40} is out of range: this layer has "
                                  f"features 0..{d_sae - 1} (whole numbers)") from None


def _labels(loaded: LoadedAtlas, hookpoint: str, feature: int) -> tuple[LabelInfo, ...]:
    lmap = read_layer_map(loaded.folder, loaded.fingerprint)
    if lmap is None or hookpoint not in lmap.hookpoints:
        return ()
    out = []
    for task, names in lmap.vocab.items():
        s = lmap.stats("sae", hookpoint, task)
        if feature < len(s.label) and int(s.label[feature]) >= 0:
            out.append(LabelInfo(task, names[int(s.label[feature])],
                                 float(s.consistency[feature]), int(s.support[feature]),
                                 float(s.lift[feature])))
    return tuple(out)


def feature_page(loaded_atlas: LoadedAtlas, hookpoint: str, feature: int) -> FeaturePage:
    """The data of one feature's page (the atlas must have a feature index)."""
    loaded = loaded_atlas
    f = check_ids(loaded, hookpoint, feature)
    index = open_index(loaded.folder, loaded.fingerprint)
    row = index.row(hookpoint, f)
    tok = loaded.lm.tokenizer
    top = tuple(_snippet(index, tok, int(t), float(v), a)
                for t, v, a in zip(row["top_tok"], row["top_val"], row["top_acts"], strict=True)
                if t >= 0)
    samples = tuple(_snippet(index, tok, int(t), float(v), a, q)
                    for t, v, a, q in zip(row["q_tok"], row["q_val"], row["q_acts"],
                                          index.cfg.quantiles, strict=True) if t >= 0)
    row_1D = loaded.saes[hookpoint].W_dec[f:f + 1].detach()  # attn_z: through o_proj
    lens = logit_lens(loaded.lm, loaded.lm.to_residual(hookpoint, row_1D)[0], N_LOGITS)

    def named(ids, vals):
        return tuple((tok.decode([int(i)]), round(float(v), 3))
                     for i, v in zip(ids, vals, strict=True))

    lo, hi = float(row["hist_lo"]), float(row["hist_hi"])
    return FeaturePage(
        hookpoint=hookpoint, feature=f, d_sae=loaded.saes[hookpoint].cfg.d_sae,
        n_tokens=index.n_tokens(hookpoint), n_fire=int(row["n_fire"]),
        n_contexts=int(row["n_ctx"]), max_act=hi,
        hist_counts=tuple(row["hist"].tolist()),
        hist_edges=tuple(hist_edges(lo, hi, index.cfg.hist_bins)),
        promoted=named(lens.top_ids, lens.top_vals),
        suppressed=named(lens.bottom_ids, lens.bottom_vals),
        top=top, samples=samples, labels=_labels(loaded, hookpoint, f),
    )
