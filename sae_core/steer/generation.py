"""Generation with steering: the unsteered and steered continuations of a prompt as rows of
one batch (see edits.py for the edits).

Every row shares the prompt (no padding), the hooks edit only the rows that carry a
steering, and sampling draws one shared random number per step for all rows, so the
unsteered row is the same text a plain run with that seed writes and differences come from
the steering.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from ..activations import OUTLIER_FACTOR
from ..atlas.layout import LoadedAtlas
from ..errors import BadInput, check_number, check_text, check_whole
from ..lm import LM
from ..norms import typical_norms
from ..sae import Sae
from .edits import Steering, check_steering, steering_hooks

MAX_NEW_TOKENS = 200
MAX_PROMPT_TOKENS = 512
MAX_PROMPT_CHARS = 2_000
"""Longest prompt, in characters: longer prompts are refused before tokenizing. The one
prompt limit; the app's forms and API read it from here."""
MAX_TEMPERATURE = 5
FEW_ROWS = 16


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
        check_whole(self.max_new_tokens, "max new tokens", 1, MAX_NEW_TOKENS)
        check_number(self.temperature, "temperature", 0, MAX_TEMPERATURE)
        check_whole(self.top_k, "top_k", 1, 10**6)
        check_whole(self.seed, "seed", -(2**63), 2**63 - 1)  # what torch's generator takes


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


def prompt_ids(lm: LM, prompt: str, gen: GenConfig) -> Tensor:
    """(P,) token ids of the prompt, in the chat template when asked and available."""
    if isinstance(prompt, str) and not prompt.strip():
        raise BadInput("prompt", "type a prompt first")
    prompt = check_text(prompt, "prompt", max_chars=MAX_PROMPT_CHARS)
    templated = gen.chat and bool(lm.tokenizer.chat_template)
    text = lm.chat_prompt(prompt.strip()) if templated else prompt.strip()
    ids = lm.tokenizer(text, add_special_tokens=not templated, return_tensors="pt").input_ids[0]
    limit = min(MAX_PROMPT_TOKENS, _max_positions(lm) - gen.max_new_tokens)
    if len(ids) > limit:
        raise BadInput("prompt", f"the prompt is {len(ids)} tokens long; at most {limit} fit with "
                         f"{gen.max_new_tokens} new tokens")
    return ids


def _max_positions(lm: LM) -> int:
    return getattr(lm.model.config, "max_position_embeddings", None) or 2048


def _stop_ids(lm: LM) -> Tensor:
    ids = {lm.tokenizer.eos_token_id, lm.model.generation_config.eos_token_id}
    flat = [i for x in ids for i in (x if isinstance(x, list) else [x]) if i is not None]
    return torch.tensor(sorted(set(flat)), dtype=torch.long, device=lm.device)


def _pick(logits_BV: Tensor, gen: GenConfig, rng: torch.Generator) -> Tensor:
    """Next token per row: greedy, or inverse-CDF sampling with one uniform shared by all
    rows (common random numbers: rows with equal distributions pick the same token)."""
    if gen.temperature == 0:
        return logits_BV.argmax(-1)
    # One draw per step from a CPU generator: the same numbers on every device.
    u = torch.rand((), generator=rng)  # cpu: a 0-dim tensor mixes with any device's
    p_BK, i_BK = (logits_BV / gen.temperature).softmax(-1).topk(gen.top_k, dim=-1)
    cdf_BK = p_BK.cumsum(-1)
    j_B1 = torch.searchsorted(cdf_BK, u * cdf_BK[:, -1:]).clamp_max(p_BK.shape[1] - 1)
    return i_BK.gather(1, j_B1).squeeze(1)


@torch.inference_mode()
def generate(
    lm: LM, saes: dict[str, Sae], norms: dict[str, float], ids_P: Tensor,
    rows: Sequence[Steering | None], gen: GenConfig, *, outlier_factor: float = OUTLIER_FACTOR,
    on_step: Callable[[Tensor], None] | None = None, few_rows_linear: bool = True,
    on_tokens: Callable[[list[list[int]]], None] | None = None,
) -> list[list[int]]:
    """New token ids for each row (cut at the first stop token); all rows share the prompt
    `ids_P`, row b is steered by `rows[b]` (None: unsteered). `on_step(logits_BV)` sees
    every step's next-token logits (float32, on the LM's device); `on_tokens(rows)` every
    step's tokens so far per row, cut as the result is (for streaming: it runs in this
    thread, where the steering hooks act); `few_rows_linear=False` runs the model's linear
    layers as they are (see `_FewRowsLinear`: CPU only)."""
    P, B, n_text, dev = len(ids_P), len(rows), len(lm.tokenizer), lm.device
    stop, rng = _stop_ids(lm), torch.Generator().manual_seed(gen.seed)
    new_BT = torch.zeros(B, 0, dtype=torch.long, device=dev)
    done_B = torch.zeros(B, dtype=torch.bool, device=dev)
    # A CPU/MKL measurement (see the class): elsewhere the model's own linear runs.
    few = few_rows_linear and dev.type == "cpu"
    with (steering_hooks(lm, saes, norms, rows, prompt_len=P,
                         outlier_factor=outlier_factor) as cursor,
          _FewRowsLinear() if few else nullcontext()):
        inp_BL, past = ids_P.to(dev).expand(B, P), None
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
            if on_tokens:
                on_tokens(_cut(new_BT, stop))
            if done_B.all():
                break
            inp_BL = nxt_B[:, None]
    return _cut(new_BT, stop)


def _cut(new_BT: Tensor, stop: Tensor) -> list[list[int]]:
    """Each row's tokens up to its first stop token."""
    stops, result = set(stop.tolist()), []
    for row in new_BT.tolist():
        ends = [i for i, t in enumerate(row) if t in stops]
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


def side_by_side(loaded: LoadedAtlas, prompt: str, steering: Steering,
                 gen: GenConfig, on_text: Callable[[str, str], None] | None = None
                 ) -> SideBySide:
    """Unsteered and steered continuations of `prompt`, generated together as one batch of
    two rows; `on_text(unsteered, steered)` sees both texts so far after every token."""
    check_steering(steering, loaded.saes)
    ids_P = prompt_ids(loaded.lm, prompt, gen)
    hookpoints = sorted({f.hookpoint for f in steering.features})
    norms, measured = typical_norms(loaded.lm, loaded.saes, hookpoints, corpus=loaded.corpus)
    t0 = time.perf_counter()
    decode = loaded.lm.tokenizer.decode

    def texts(rows: list[list[int]]) -> None:
        on_text(*(decode(r, skip_special_tokens=True) for r in rows))

    plain, steered = generate(loaded.lm, loaded.saes, norms, ids_P, [None, steering], gen,
                              outlier_factor=loaded.outlier_factor,
                              on_tokens=texts if on_text else None)
    return SideBySide(decode(plain, skip_special_tokens=True),
                      decode(steered, skip_special_tokens=True), (len(plain), len(steered)),
                      time.perf_counter() - t0, norms, tuple(measured))


def unsteered(loaded: LoadedAtlas, prompt: str, gen: GenConfig,
              on_text: Callable[[str], None] | None = None) -> str:
    """The model's own continuation of `prompt` (how the prompting baseline writes);
    `on_text` sees the text so far after every token."""
    decode = loaded.lm.tokenizer.decode

    def text(rows: list[list[int]]) -> None:
        on_text(decode(rows[0], skip_special_tokens=True))

    new = generate(loaded.lm, {}, {}, prompt_ids(loaded.lm, prompt, gen), [None], gen,
                   on_tokens=text if on_text else None)[0]
    return decode(new, skip_special_tokens=True)
