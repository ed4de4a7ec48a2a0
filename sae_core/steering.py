"""Steered generation: edit the residual stream along SAE features while the model writes.

Two modes, both at the feature's layer (`layers.N`, the output of block N):
- `add`: x -> x + s * n * d_f, with d_f the feature's unit decoder row and n the layer's
  typical residual norm (median over corpus tokens), so one strength scale fits every layer;
- `clamp`: x -> x + (s * n - a_f(x)) * W_dec[f], with a_f(x) the feature's current SAE
  activation (TopK: its value if it is among the top k, else 0). The SAE's reconstruction
  error stays in place, so the edit changes that feature's contribution and nothing else.

The unsteered and steered continuations of a prompt run as rows of one batch: every row
shares the prompt (no padding), the hooks edit only the rows that carry a steering, and
sampling draws one shared random number per step for all rows, so the unsteered row is
the same text a plain run with that seed writes and differences come from the steering.
Tokens the SAEs never trained on (position 0, norm above outlier_factor x the typical norm)
are never edited: their reading by the SAE means nothing and steering there does nothing
useful (DESIGN.md). Hooks act only in the calling thread and are removed in `finally`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from .corpus import load_texts, token_windows
from .evaluate import residual_norms
from .hooks import edit_output
from .lm import LM, parse_hookpoint
from .sae import Sae

MAX_STRENGTH = 20.0
"""Largest |strength| accepted, in multiples of the layer's typical residual norm."""
MAX_NEW_TOKENS = 200
MAX_PROMPT_TOKENS = 512
MAX_FEATURES = 8
FEW_ROWS = 16
Mode = Literal["add", "clamp"]
Positions = Literal["all", "generated"]


@dataclass(frozen=True)
class FeatureSteer:
    hookpoint: str
    """Where the feature's SAE reads: `layers.N` (residual after block N) or `layers.N.mlp`."""
    feature: int
    """Latent index in that layer's SAE."""
    strength: float
    """In multiples of the layer's typical residual norm. add: length of the added vector;
    clamp: the value the feature's activation is set to."""
    mode: Mode = "add"

    def __post_init__(self) -> None:
        if not isinstance(self.strength, int | float) or not math.isfinite(self.strength):
            raise ValueError(f"strength must be a finite number, got {self.strength!r}")
        if abs(self.strength) > MAX_STRENGTH:
            raise ValueError(f"strength {self.strength:g} is too large: use a value between "
                             f"-{MAX_STRENGTH:g} and {MAX_STRENGTH:g} (x the layer's norm)")
        if self.mode not in ("add", "clamp"):
            raise ValueError(f"mode must be 'add' or 'clamp', got {self.mode!r}")
        parse_hookpoint(self.hookpoint)
        if self.feature < 0:
            raise ValueError(f"feature numbers start at 0, got {self.feature}")

    @property
    def layer(self) -> int:
        return parse_hookpoint(self.hookpoint)[0]


@dataclass(frozen=True)
class Steering:
    features: tuple[FeatureSteer, ...]
    positions: Positions = "all"
    """`all`: every prompt and generated position; `generated`: only positions that predict
    a new token (the last prompt position onwards), the prompt itself is read unsteered."""

    def __post_init__(self) -> None:
        if not self.features:
            raise ValueError("pick at least one feature to steer with")
        if len(self.features) > MAX_FEATURES:
            raise ValueError(f"at most {MAX_FEATURES} features at once, got {len(self.features)}")
        if self.positions not in ("all", "generated"):
            raise ValueError(f"positions must be 'all' or 'generated', got {self.positions!r}")


@dataclass(frozen=True)
class GenConfig:
    max_new_tokens: int = 48
    temperature: float = 0.0
    """0 means greedy."""
    top_k: int = 50
    """Sampling keeps the top_k most likely tokens."""
    seed: int = 0
    chat: bool = True
    """Wrap the prompt in the chat template (instruct models; plain text otherwise)."""

    def __post_init__(self) -> None:
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise ValueError(f"max new tokens must be between 1 and {MAX_NEW_TOKENS}, "
                             f"got {self.max_new_tokens}")
        if not math.isfinite(self.temperature) or not 0 <= self.temperature <= 5:
            raise ValueError(f"temperature must be between 0 and 5, got {self.temperature}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")


def hookpoint_for_layer(saes: dict[str, Sae], layer: int) -> str:
    """The atlas's hookpoint at layer N (`layers.N`, else `layers.N.mlp`); clear error if none."""
    for h in (f"layers.{layer}", f"layers.{layer}.mlp"):
        if h in saes:
            return h
    layers = sorted({parse_hookpoint(h)[0] for h in saes})
    raise ValueError(f"layer {layer} is not in this SAE set (layers: "
                     f"{', '.join(map(str, layers))})")


def check_steering(steering: Steering, saes: dict[str, Sae]) -> None:
    """Clear errors for layers outside the atlas and features outside the SAE."""
    for f in steering.features:
        if f.hookpoint not in saes:
            hookpoint_for_layer(saes, f.layer)  # names the layers there are
            raise ValueError(f"this SAE set has no SAE at {f.hookpoint}")
        d_sae = saes[f.hookpoint].cfg.d_sae
        if f.feature >= d_sae:
            raise ValueError(f"feature {f.feature} does not exist at layer {f.layer}: "
                             f"features are numbered 0..{d_sae - 1}")


# ---- typical residual norms -------------------------------------------------------------

_measured: dict[tuple[str, str], float] = {}


def measure_norms(lm: LM, hookpoints: list[str], texts: list[str], *, n_windows: int = 8,
                  seq_len: int = 128) -> dict[str, float]:
    """Median residual norm per hookpoint over a few corpus windows (position 0 left out)."""
    windows = token_windows(lm.tokenizer, texts[: 4 * n_windows], seq_len)[:n_windows]
    norms = residual_norms(lm, hookpoints, windows, bf16=False)
    return {h: median for h, (median, _) in norms.items()}


def typical_norms(lm: LM, saes: dict[str, Sae], hookpoints: list[str], *,
                  corpus: str = "default") -> tuple[dict[str, float], list[str]]:
    """(norm per hookpoint, hookpoints whose norm was measured now). SAEs trained here carry
    `median_norm` in their metadata; others (e.g. from the Hub) get it measured once."""
    norms, measured = {}, []
    missing = [h for h in hookpoints if "median_norm" not in saes[h].metadata
               and (lm.name, h) not in _measured]
    if missing:
        for h, n in measure_norms(lm, missing, load_texts(corpus)).items():
            _measured[(lm.name, h)] = n
    for h in hookpoints:
        if "median_norm" in saes[h].metadata:
            norms[h] = float(saes[h].metadata["median_norm"])
        else:
            norms[h], measured = _measured[(lm.name, h)], [*measured, h]
    return norms, measured


# ---- hooks -------------------------------------------------------------------------------

def feature_acts(sae: Sae, x_ND: Tensor, feats_C: Tensor) -> Tensor:
    """(N, C) current SAE activation of latents `feats_C`: TopK: the value if the latent is
    among the top k (and positive), else 0; ReLU / JumpReLU: as `Sae.encode`."""
    pre_NS = sae.pre_acts(x_ND.float())
    pre_NC = pre_NS[:, feats_C]
    if sae.cfg.architecture == "relu":
        return pre_NC.clamp_min(0)
    if sae.cfg.architecture == "jumprelu":
        return pre_NC.clamp_min(0) * (pre_NC > sae.threshold[feats_C])
    kth_N1 = pre_NS.topk(sae.cfg.k, dim=-1).values[:, -1:]
    return torch.where(pre_NC >= kth_N1, pre_NC, 0.0).clamp_min(0)


@dataclass
class _Cursor:
    offset: int = 0
    """Tokens already in the KV cache when the current forward starts."""


def _layer_edit(sae: Sae, norm: float, rows: Sequence[Steering | None], hookpoint: str,
                prompt_len: int, cursor: _Cursor, outlier_factor: float) -> Callable:
    """The output edit of one layer for a batch whose row b carries `rows[b]`."""
    B, d = len(rows), sae.cfg.d_in
    add_BD = torch.zeros(B, d)
    clamp_ids = sorted({f.feature for r in rows if r for f in r.features
                        if f.hookpoint == hookpoint and f.mode == "clamp"})
    value_BC = torch.zeros(B, len(clamp_ids))
    on_BC = torch.zeros(B, len(clamp_ids))
    start_B = torch.zeros(B, dtype=torch.long)
    w_dec = sae.W_dec.detach().float()
    for b, row in enumerate(rows):
        if row is None:
            continue
        start_B[b] = max(prompt_len - 1, 1) if row.positions == "generated" else 1
        for f in row.features:
            if f.hookpoint != hookpoint:
                continue
            if f.mode == "add":
                add_BD[b] += f.strength * norm * w_dec[f.feature] / w_dec[f.feature].norm()
            else:
                c = clamp_ids.index(f.feature)
                value_BC[b, c], on_BC[b, c] = f.strength * norm, 1.0
    feats_C = torch.tensor(clamp_ids, dtype=torch.long)
    dirs_CD = w_dec[feats_C]

    def edit(x_BLD: Tensor) -> Tensor:
        L = x_BLD.shape[1]
        pos_L = cursor.offset + torch.arange(L)
        ok_BL = (pos_L >= start_B[:, None]) & (x_BLD.norm(dim=-1) <= outlier_factor * norm)
        delta_BLD = add_BD[:, None, :].expand(B, L, d)
        if clamp_ids:
            a_BLC = feature_acts(sae, x_BLD.reshape(B * L, d), feats_C).view(B, L, -1)
            delta_BLD = delta_BLD + ((value_BC[:, None] - a_BLC) * on_BC[:, None]) @ dirs_CD
        # Rows without steering get exactly +0: their numbers are untouched.
        return x_BLD + (delta_BLD * ok_BL[..., None]).to(x_BLD.dtype)

    return edit


@contextmanager
def steering_hooks(lm: LM, saes: dict[str, Sae], norms: dict[str, float],
                   rows: Sequence[Steering | None], *, prompt_len: int,
                   outlier_factor: float = 10.0) -> Iterator[_Cursor]:
    """Edit every steered layer for a batch whose row b carries `rows[b]` (None: no edit).
    Yields the cursor that the caller advances by the tokens each forward adds to the KV
    cache (0 for a forward without cache). All hooks are removed on exit, error or not."""
    cursor = _Cursor()
    with ExitStack() as hooks:
        for h in sorted({f.hookpoint for r in rows if r for f in r.features}):
            edit = _layer_edit(saes[h], norms[h], rows, h, prompt_len, cursor, outlier_factor)
            hooks.enter_context(edit_output(lm, h, edit))
        yield cursor


class _FewRowsLinear(TorchFunctionMode):
    """F.linear on a few rows as W @ x.T. Measured on this CPU (MKL, 2 threads): x @ W.T on
    2 rows costs ~2x one row, W @ x.T does not (a decoding step of SmolLM2 for a batch of 2:
    ~110 ms against ~55 ms; one row: the same either way). Torch function modes are
    thread-local like the hooks, so other visitors' forwards are untouched."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and not kwargs and len(args) in (2, 3):
            x, w = args[0], args[1]
            x_ND = x.reshape(-1, x.shape[-1])
            if x_ND.shape[0] <= FEW_ROWS:
                y_ND = torch.mm(w, x_ND.T).T
                if len(args) == 3 and args[2] is not None:
                    y_ND = y_ND + args[2]
                return y_ND.reshape(*x.shape[:-1], w.shape[0])
        return func(*args, **kwargs)


# ---- generation --------------------------------------------------------------------------

def prompt_ids(lm: LM, prompt: str, gen: GenConfig) -> Tensor:
    """(P,) token ids of the prompt, in the chat template when asked and available."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("type a prompt first")
    templated = gen.chat and bool(lm.tokenizer.chat_template)
    text = lm.chat_prompt(prompt.strip()) if templated else prompt.strip()
    ids = lm.tokenizer(text, add_special_tokens=not templated, return_tensors="pt").input_ids[0]
    limit = min(MAX_PROMPT_TOKENS, _max_positions(lm) - gen.max_new_tokens)
    if len(ids) > limit:
        raise ValueError(f"the prompt is {len(ids)} tokens long; at most {limit} fit with "
                         f"{gen.max_new_tokens} new tokens")
    return ids


def _max_positions(lm: LM) -> int:
    return getattr(lm.model.config, "max_position_embeddings", None) or 2048


def _stop_ids(lm: LM) -> Tensor:
    ids = {lm.tokenizer.eos_token_id, lm.model.generation_config.eos_token_id}
    flat = [i for x in ids for i in (x if isinstance(x, list) else [x]) if i is not None]
    return torch.tensor(sorted(set(flat)), dtype=torch.long)


def _pick(logits_BV: Tensor, gen: GenConfig, rng: torch.Generator) -> Tensor:
    """Next token per row: greedy, or inverse-CDF sampling with one uniform shared by all
    rows (common random numbers: rows with equal distributions pick the same token)."""
    if gen.temperature == 0:
        return logits_BV.argmax(-1)
    u = torch.rand((), generator=rng)
    p_BK, i_BK = (logits_BV / gen.temperature).softmax(-1).topk(gen.top_k, dim=-1)
    cdf_BK = p_BK.cumsum(-1)
    j_B1 = torch.searchsorted(cdf_BK, u * cdf_BK[:, -1:]).clamp_max(p_BK.shape[1] - 1)
    return i_BK.gather(1, j_B1).squeeze(1)


@torch.inference_mode()
def generate(
    lm: LM, saes: dict[str, Sae], norms: dict[str, float], ids_P: Tensor,
    rows: Sequence[Steering | None], gen: GenConfig, *, outlier_factor: float = 10.0,
    on_step: Callable[[Tensor], None] | None = None, few_rows_linear: bool = True,
) -> list[list[int]]:
    """New token ids for each row (cut at the first stop token); all rows share the prompt
    `ids_P`, row b is steered by `rows[b]` (None: unsteered). `on_step(logits_BV)` sees
    every step's next-token logits (float32); `few_rows_linear=False` runs the model's
    linear layers as they are (see `_FewRowsLinear`)."""
    P, B, n_text = len(ids_P), len(rows), len(lm.tokenizer)
    stop, rng = _stop_ids(lm), torch.Generator().manual_seed(gen.seed)
    new_BT = torch.zeros(B, 0, dtype=torch.long)
    done_B = torch.zeros(B, dtype=torch.bool)
    with (steering_hooks(lm, saes, norms, rows, prompt_len=P,
                         outlier_factor=outlier_factor) as cursor,
          _FewRowsLinear() if few_rows_linear else nullcontext()):
        inp_BL, past = ids_P.expand(B, P), None
        for _ in range(gen.max_new_tokens):
            out = lm.model(input_ids=inp_BL, past_key_values=past, use_cache=True)
            cursor.offset += inp_BL.shape[1]
            past, logits_BV = out.past_key_values, out.logits[:, -1].float()
            logits_BV[:, n_text:] = -torch.inf  # padding rows of the vocabulary print nothing
            if on_step:
                on_step(logits_BV)
            nxt_B = torch.where(done_B, stop[0], _pick(logits_BV, gen, rng))
            new_BT = torch.cat([new_BT, nxt_B[:, None]], dim=1)
            done_B |= torch.isin(nxt_B, stop)
            if done_B.all():
                break
            inp_BL = nxt_B[:, None]
    result = []
    for row in new_BT.tolist():
        ends = [i for i, t in enumerate(row) if t in set(stop.tolist())]
        result.append(row[: ends[0]] if ends else row)
    return result


@dataclass(frozen=True)
class SideBySide:
    unsteered: str
    steered: str
    n_tokens: tuple[int, int]
    """New tokens written (unsteered, steered)."""
    seconds: float
    norms: dict[str, float]
    """Typical residual norm used at each steered layer (strength 1 = this length)."""
    measured: tuple[str, ...]
    """Layers whose typical norm the SAE lacked and was measured on corpus windows."""


def side_by_side(loaded, prompt: str, steering: Steering, gen: GenConfig) -> SideBySide:
    """Unsteered and steered continuations of `prompt`, generated together as one batch of
    two rows. `loaded` is a session.LoadedAtlas."""
    check_steering(steering, loaded.saes)
    ids_P = prompt_ids(loaded.lm, prompt, gen)
    hookpoints = sorted({f.hookpoint for f in steering.features})
    norms, measured = typical_norms(loaded.lm, loaded.saes, hookpoints,
                                    corpus=loaded.info.get("corpus", "default"))
    factor = loaded.info.get("train_cfg", {}).get("outlier_factor", 10.0)
    t0 = time.perf_counter()
    plain, steered = generate(loaded.lm, loaded.saes, norms, ids_P, [None, steering], gen,
                              outlier_factor=factor)
    decode = loaded.lm.tokenizer.decode
    return SideBySide(decode(plain, skip_special_tokens=True),
                      decode(steered, skip_special_tokens=True), (len(plain), len(steered)),
                      time.perf_counter() - t0, norms, tuple(measured))
