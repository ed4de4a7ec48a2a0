"""Live view: which SAE features fire on each token of a text, at every layer of an atlas.

One forward pass captures every hookpoint of the atlas (cut after the deepest one) and each
layer's SAE encodes its tokens, through the views' one encoding path (sae_core/encode.py);
we keep the few strongest features per token and layer, strongest meaning the longest
vector written into the residual stream (activation x decoder row norm). Tokens the SAEs
never trained on (position 0 and massive activations, norm > outlier_factor x the layer's
median, see DESIGN.md) are flagged and get no features: an SAE's reading of them means
nothing.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from ..atlas.layout import LoadedAtlas
from ..corpus import bos_id
from ..encode import LayerCodes, decoder_norms, encode_batch
from ..errors import BadInput, check_text, check_whole
from ..sae import Sae
from ..topk import topk_best_first

MAX_TOKENS = 256
"""Default token limit: the forward and 30 SAE encodes of 256 tokens take well under 1.5 s
on 2 cores; text beyond it is cut with a notice."""
TOP = 8
"""Features kept per token and layer."""
LEAD_IN = "\n"
"""Read before the text (hidden). In SmolLM2 the token right after BOS has a residual norm
3-10x the layer's typical one (measured: "Paris", "dog", "happy" there peak at 8-10x at
layer 2; after a newline they stay under 1.8x), and its features say "start of text" rather
than anything about the word. After the lead-in the text's first token reads like any other."""
_KEEP_CONTROL = {"\n", "\t"}


@dataclass(frozen=True)
class LiveView:
    text: str
    """The text shown: cleaned and, when too long, cut at a token boundary."""
    pieces: tuple[str, ...]
    """Per token, the exact slice of `text` it covers; "".join(pieces) == text. A character
    split over several byte-level tokens (emoji, CJK) goes to the first; the rest get ""."""
    token_ids: tuple[int, ...]
    prefix_ids: tuple[int, ...]
    """Tokens read before the text (start token, lead-in); not shown."""
    hookpoints: tuple[str, ...]
    top_idx_TLK: Tensor
    """(tokens, layers, top) int64 feature ids, strongest first; -1 where none fires or the
    token is flagged."""
    top_act_TLK: Tensor
    """(tokens, layers, top) float32 activations matching `top_idx_TLK`; 0 where none."""
    top_write_TLK: Tensor
    """(tokens, layers, top) float32 act * ||W_dec[f]||: the length each feature writes into
    the residual stream, by which "strongest" ranks (decoder rows need not be unit)."""
    flagged_TL: Tensor
    """(tokens, layers) bool: position 0 or a massive activation; no features shown."""
    norm_TL: Tensor
    """(tokens, layers) float32 residual norm of each token."""
    medians: tuple[float, ...]
    """Per layer, the typical residual norm the SAE was trained at."""
    notices: tuple[str, ...]
    """Plain-language notes for the user: truncation, removed characters, flagged tokens."""

    @property
    def n_tokens(self) -> int:
        return len(self.pieces)

    def strongest(self) -> tuple[Tensor, Tensor]:
        """(tokens, layers) id and activation of the strongest feature, the one writing the
        longest vector into the residual stream (-1 / 0 if none)."""
        return self.top_idx_TLK[:, :, 0], self.top_act_TLK[:, :, 0]


def clean_text(text: str) -> tuple[str, int]:
    """(text without control characters except newline and tab, number removed).

    Windows line ends become "\\n"; lone surrogates (which no tokenizer encodes) go too.
    Emoji, accents and joiners (category Cf) stay.
    """
    text = text.replace("\r\n", "\n")
    kept = [c for c in text
            if c in _KEEP_CONTROL or unicodedata.category(c) not in ("Cc", "Cs")]
    return "".join(kept), len(text) - len(kept)


def token_pieces(text: str, offsets: list[tuple[int, int]]) -> list[str]:
    """Per token, the slice of `text` from the previous token's end to its own end.

    Offsets of byte-level tokens overlap (three tokens of one emoji all span it) and skip
    spaces; cutting at the running maximum of the ends gives pieces that join back into
    the text exactly, gaps going to the following token.
    """
    ends, reach = [], 0
    for _, end in offsets:
        reach = max(reach, end)
        ends.append(reach)
    if ends:
        ends[-1] = len(text)
    starts = [0, *ends[:-1]]
    return [text[a:b] for a, b in zip(starts, ends, strict=True)]


def tokenize_text(tokenizer: PreTrainedTokenizerBase, text: str, max_tokens: int
                  ) -> tuple[str, list[int], list[str], list[str]]:
    """(text covered, token ids, pieces, notices) after cleaning and truncation; no special
    tokens. BadInput (a ValueError) when it is no text, over MAX_TEXT_CHARS, or nothing
    readable is left."""
    raw_len = len(check_text(text, "the text", empty_ok=True))
    # Cut long input before cleaning and tokenizing; 32 characters a token is generous.
    limit = max(4096, 32 * max_tokens)
    text, n_removed = clean_text(text[:limit])
    if not text.strip():
        raise BadInput("the text", "The text is empty: type or paste some text first.")
    notices = []
    if n_removed:
        notices.append(f"Removed {n_removed} control character(s) the model cannot read.")
    work, full_len = text, raw_len if raw_len > limit else len(text)
    enc = tokenizer(work, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    if not ids:
        raise BadInput("the text", "The model's tokenizer reads no token in this text.")
    if len(ids) > max_tokens or raw_len > limit:
        ids, offsets = ids[:max_tokens], offsets[:max_tokens]
        cut = max(end for _, end in offsets)
        work = work[:cut]
        notices.append(f"The text is long: showing its first {len(ids)} tokens "
                       f"({cut:,} of {full_len:,} characters).")
    return work, ids, token_pieces(work, offsets), notices


def _strongest(codes: LayerCodes, sae: Sae, skip: int, top: int
               ) -> tuple[Tensor, Tensor, Tensor]:
    """(ids, activations, writes), each (tokens, top), of one layer's `top` features per text
    token that write the most into the residual stream; -1 / 0 / 0 in empty slots."""
    vals_TK, idx_TK = codes.vals_BLK[0, skip:], codes.idx_BLK[0, skip:]
    write_TK = vals_TK * decoder_norms(sae)[idx_TK]
    width = min(top, write_TK.shape[1])
    write_TK, order = topk_best_first(write_TK, width)  # ties: the earlier slot first
    vals_TK, idx_TK = vals_TK.gather(1, order), idx_TK.gather(1, order)
    idx_TK = torch.where(vals_TK > 0, idx_TK, -1)
    pad = (0, top - width)
    return (F.pad(idx_TK, pad, value=-1), F.pad(vals_TK, pad), F.pad(write_TK, pad))


def _first_token(loaded: LoadedAtlas) -> int | None:
    """The token that starts the sequence, as in training: BOS, else the EOS that joins the
    corpus documents, so the first word of the text is not at the special position 0."""
    tok = loaded.lm.tokenizer
    bos = bos_id(tok, None)
    return bos if bos is not None else tok.eos_token_id


@torch.inference_mode()
def live_view(loaded_atlas: LoadedAtlas, text: str, *, max_tokens: int = MAX_TOKENS,
              top: int | None = TOP, lead_in: str = LEAD_IN) -> LiveView:
    """The `top` strongest features of every token at every layer of the atlas (None: all that
    fire), reading the text after a start token (BOS as in training, else EOS) and `lead_in`.

    Raises ValueError with a message for the user on empty text; long text is cut to
    `max_tokens` tokens with a notice in `LiveView.notices`.
    """
    max_tokens = check_whole(max_tokens, "max_tokens", 1)
    top = None if top is None else check_whole(top, "top", 1)
    loaded = loaded_atlas
    first = _first_token(loaded)
    prefix = [] if first is None else [first]
    prefix += loaded.lm.tokenizer(lead_in, add_special_tokens=False)["input_ids"] if lead_in else []
    context = getattr(loaded.lm.model.config, "max_position_embeddings", None)
    if context:
        max_tokens = min(max_tokens, context - len(prefix))
    text, ids, pieces, notices = tokenize_text(loaded.lm.tokenizer, text, max_tokens)
    ids_1T = torch.tensor([prefix + ids], dtype=torch.long)  # cpu: run_captured moves ids
    hookpoints = loaded.hookpoints
    factor = loaded.outlier_factor
    medians = loaded.medians
    codes = encode_batch(loaded.lm, loaded.saes, ids_1T, medians, outlier_factor=factor)
    skip = len(prefix)
    top = top or max(c.vals_BLK.shape[2] for c in codes.values())
    per_layer = [_strongest(codes[h], loaded.saes[h], skip, top) for h in hookpoints]
    idx_TLK, act_TLK, write_TLK = (torch.stack(t, dim=1) for t in zip(*per_layer, strict=True))
    flagged_TL = torch.stack([~codes[h].keep_BL[0, skip:] for h in hookpoints], dim=1)
    norm_TL = torch.stack([codes[h].acts_BLD[0, skip:].float().norm(dim=-1)
                           for h in hookpoints], dim=1)
    # Without a start token the first text token sits at position 0: flagged, not news.
    n_flag = int(flagged_TL[0 if prefix else 1:].any(dim=1).sum())
    if n_flag:
        notices.append(f"{n_flag} token(s) carry a massive activation at some layers (norm over "
                       f"{factor:g}x the typical one); the SAEs were not trained on such tokens, "
                       "so no features are shown there.")
    return LiveView(text, tuple(pieces), tuple(ids), tuple(prefix), tuple(hookpoints),
                    idx_TLK, act_TLK, write_TLK, flagged_TL, norm_TL,
                    tuple(medians[h] for h in hookpoints), tuple(notices))
