"""Live view on the tiny atlas: same features as the SAE on captured activations, tokens that
join back into the text, outliers flagged, bad input answered with a message."""

import dataclasses

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from sae_core.encode import BF16, decoder_norms, encode_dense
from sae_core.explore.live import clean_text, live_view, token_pieces, tokenize_text
from sae_core.hooks import run_captured
from ui.live.view import show_token

UNICODE = "Naïve café: 東京 and Zürich 🙂👍🏽 — «quoted» e\u0301 ok\n\tend"


@pytest.fixture(scope="module")
def byte_bpe() -> PreTrainedTokenizerFast:
    """A small byte-level BPE (as SmolLM2, GPT-2): emoji and CJK split into byte tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=
                                  pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<eos>"])
    tok.train_from_iterator(["the cat sat on the mat in Paris", "naive cafe tokenization"] * 20,
                            trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


def _direct(loaded, view):
    """Dense SAE activations of the view's tokens, from a separate captured forward."""
    # tiny tokenizer: no BOS, so EOS starts the text; the newline lead-in has no token
    assert view.prefix_ids == (loaded.lm.tokenizer.eos_token_id,)
    ids = torch.tensor([[*view.prefix_ids, *view.token_ids]])
    acts = run_captured(loaded.lm, ids, loaded.hookpoints, bf16=BF16)
    return {h: encode_dense(loaded.saes[h], acts[h][0, 1:]) for h in loaded.hookpoints}


def test_strongest_feature_matches_the_sae_on_captured_activations(loaded):
    view = live_view(loaded, "the cat sat on the mat . Paris is big , a dog ran", top=3)
    assert view.top_idx_TLK.shape == (view.n_tokens, 3, 3) and view.n_tokens == 14
    dense = _direct(loaded, view)
    for j, h in enumerate(loaded.hookpoints):
        acts_TS = dense[h]
        keep = ~view.flagged_TL[:, j]
        assert keep.any()
        write_TS = acts_TS * decoder_norms(loaded.saes[h])  # strongest = longest written
        top_write, top_ids = write_TS.topk(3, dim=1)
        top_vals = acts_TS.gather(1, top_ids)
        assert torch.allclose(view.top_write_TLK[keep, j], top_write[keep], atol=1e-5)
        assert torch.allclose(view.top_act_TLK[keep, j], top_vals[keep], atol=1e-5)
        fired = top_vals[keep] > 0
        assert (view.top_idx_TLK[keep, j][fired] == top_ids[keep][fired]).all()
        assert (view.top_idx_TLK[keep, j][~fired] == -1).all()
        assert (view.top_idx_TLK[~keep, j] == -1).all()
        # strongest first
        assert (view.top_write_TLK[:, j, :-1] >= view.top_write_TLK[:, j, 1:]).all()


def test_massive_activations_are_flagged_and_get_no_feature(loaded):
    view = live_view(loaded, "the cat sat on the mat")
    assert not view.flagged_TL.any()  # the EOS start token takes position 0
    # Put the outlier threshold between the token norms of layer 1: the loudest tokens flag.
    norms = view.norm_TL[:, 1]
    cut = float(norms.median())
    factor = cut / view.medians[1]
    info = dataclasses.replace(loaded.info, train_cfg={**loaded.info.train_cfg,
                                                       "outlier_factor": factor})
    strict = dataclasses.replace(loaded, info=info)
    flagged = live_view(strict, "the cat sat on the mat")
    expect = view.norm_TL > factor * torch.tensor(view.medians)
    assert torch.equal(flagged.flagged_TL, expect) and expect[:, 1].any()
    assert (flagged.top_idx_TLK[expect] == -1).all()
    assert (flagged.top_idx_TLK[~expect] == view.top_idx_TLK[~expect]).all()
    assert any("massive activation" in n for n in flagged.notices)


def test_pieces_join_into_the_text_for_unicode_and_split_characters(byte_bpe):
    text, ids, pieces, notices = tokenize_text(byte_bpe, UNICODE, 256)
    assert text == UNICODE and "".join(pieces) == UNICODE and not notices
    assert len(pieces) == len(ids) > len(UNICODE.split())
    # each emoji is several byte tokens: the first carries it, the rest are empty
    assert "" in pieces and any("🙂" in p for p in pieces)
    # every non-empty piece decodes from its own tokens' bytes
    assert byte_bpe.decode(ids) == UNICODE
    assert show_token("") == "(cont.)" and show_token(" <b>\n") == "␣&lt;b&gt;↵"


def test_pieces_from_overlapping_and_gappy_offsets():
    assert token_pieces("ab  cd", [(0, 2), (4, 6)]) == ["ab", "  cd"]
    assert token_pieces("x🙂y", [(0, 1), (1, 2), (1, 2), (2, 3)]) == ["x", "🙂", "", "y"]
    assert token_pieces("abc ", [(0, 3)]) == ["abc "]  # trailing text joins the last piece


def test_embedded_tokenizer_pieces_align(smol_tokenizer):
    text, ids, pieces, _ = tokenize_text(smol_tokenizer, UNICODE + " unbelievably", 256)
    assert "".join(pieces) == text == UNICODE + " unbelievably"
    # a multi-token word: its pieces concatenate to the word
    tail = pieces[-3:]
    assert "".join(p for p in pieces if p) == text and len(ids) == len(pieces)
    assert "unbelievably" in "".join(tail)


@pytest.mark.parametrize("text", ["", "   \n\t ", "\x00\x01\x1b"])
def test_empty_text_is_a_clear_error(loaded, text):
    with pytest.raises(ValueError, match="empty"):
        live_view(loaded, text)


def test_long_text_is_cut_with_a_notice(loaded):
    long = ("the cat sat on the mat . " * 5000)[:100_000]
    view = live_view(loaded, long, max_tokens=40)
    assert view.n_tokens == 40 and long.startswith(view.text)
    assert "".join(view.pieces) == view.text
    assert any("first 40 tokens" in n and "100,000" in n for n in view.notices)


def test_control_characters_removed_and_emoji_kept(loaded):
    clean, n = clean_text("a\x00b\r\nc\x7f 🙂\u200d\ud800")
    assert clean == "ab\nc 🙂\u200d" and n == 3
    view = live_view(loaded, "the\x07 cat 🙂 sat")
    assert "".join(view.pieces) == view.text == "the cat 🙂 sat"
    assert any("control character" in n for n in view.notices)


def test_strongest_breaks_ties_by_the_top_k_rule():
    """Planted equal writes: the one top-k rule (topk.py) keeps the earliest slots, listed
    strongest first; empty slots come back as -1."""
    from sae_core.config import SaeConfig
    from sae_core.encode import LayerCodes
    from sae_core.explore.live import _strongest
    from sae_core.sae import Sae

    sae = Sae(SaeConfig(d_in=8, d_sae=8, k=4))
    sae.W_dec.data.copy_(torch.eye(8))  # unit rows: the write is the activation
    vals = torch.tensor([[[1.0, 2.0, 1.0, 1.0], [3.0, 0.0, 0.0, 0.0]]])
    idx = torch.tensor([[[7, 5, 3, 6], [2, 0, 1, 4]]])
    codes = LayerCodes(torch.zeros(1, 2, 8), torch.ones(1, 2, dtype=torch.bool), vals, idx)
    ids, acts, writes = _strongest(codes, sae, skip=0, top=3)
    assert ids.tolist() == [[5, 7, 3], [2, -1, -1]]
    assert acts.tolist() == writes.tolist() == [[2.0, 1.0, 1.0], [3.0, 0.0, 0.0]]
