"""Live view on the tiny atlas: same features as the SAE on captured activations, tokens that
join back into the text, outliers flagged, bad input answered with a message."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from sae_core.explore.layermap import read_layer_map
from sae_core.explore.live import clean_text, live_view, token_pieces, tokenize_text
from sae_core.hooks import run_captured
from ui import choice as ui_choice
from ui import search as ui_search
from ui import session
from ui.live_view import heatmap, show_token, token_choices, token_table

UNICODE = "Naïve café: 東京 and Zürich 🙂👍🏽 — «quoted» e\u0301 ok\n\tend"


@pytest.fixture(scope="module")
def loaded(tiny_atlas):
    return session.open_atlas(tiny_atlas)


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
    acts = run_captured(loaded.lm, ids, loaded.hookpoints, bf16=True)
    with torch.inference_mode():
        return {h: loaded.saes[h].encode(acts[h][0, 1:].float()) for h in loaded.hookpoints}


def test_strongest_feature_matches_the_sae_on_captured_activations(loaded):
    view = live_view(loaded, "the cat sat on the mat . Paris is big , a dog ran", top=3)
    assert view.top_idx_TLK.shape == (view.n_tokens, 3, 3) and view.n_tokens == 14
    dense = _direct(loaded, view)
    for j, h in enumerate(loaded.hookpoints):
        acts_TS = dense[h]
        keep = ~view.flagged_TL[:, j]
        assert keep.any()
        top_vals, top_ids = acts_TS.topk(3, dim=1)
        # ids agree wherever the activation is not tied with the next one
        assert torch.allclose(view.top_act_TLK[keep, j], top_vals[keep], atol=1e-5)
        fired = top_vals[keep] > 0
        assert (view.top_idx_TLK[keep, j][fired] == top_ids[keep][fired]).all()
        assert (view.top_idx_TLK[keep, j][~fired] == -1).all()
        assert (view.top_idx_TLK[~keep, j] == -1).all()
        # strongest first
        assert (view.top_act_TLK[:, j, :-1] >= view.top_act_TLK[:, j, 1:]).all()


def test_massive_activations_are_flagged_and_get_no_feature(loaded):
    view = live_view(loaded, "the cat sat on the mat")
    assert not view.flagged_TL.any()  # the EOS start token takes position 0
    # Put the outlier threshold between the token norms of layer 1: the loudest tokens flag.
    norms = view.norm_TL[:, 1]
    cut = float(norms.median())
    factor = cut / view.medians[1]
    info = {**loaded.info, "train_cfg": {**loaded.info["train_cfg"], "outlier_factor": factor}}
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


def test_embedded_tokenizer_pieces_align_if_available():
    from sae_core.lm import DEFAULT_CACHE

    folder = DEFAULT_CACHE / "SmolLM2-135M-Instruct"
    if not (folder / "tokenizer.json").exists():
        pytest.skip("embedded model not converted here")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    text, ids, pieces, _ = tokenize_text(tok, UNICODE + " unbelievably", 256)
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


def test_heatmap_and_token_table_show_the_strongest_features(loaded):
    view = live_view(loaded, "Paris is big , the dog ran")
    fig = heatmap(view, read_layer_map(loaded.folder))
    z = np.asarray(fig.data[0].z, dtype=float)
    assert z.shape == (view.n_tokens, len(loaded.hookpoints))
    idx, act = view.strongest()
    assert np.allclose(z, (act / torch.tensor(view.medians)).numpy(), atol=1e-5)
    custom = fig.data[0].customdata
    assert [int(c) for c in custom[:, 1, 1]] == idx[:, 1].tolist()
    assert "feature" in fig.data[0].hovertemplate and "label" in fig.data[0].hovertemplate
    assert [c[1] for c in token_choices(view)] == list(range(view.n_tokens))
    table = token_table(view, 2, read_layer_map(loaded.folder), per_layer=2)
    assert table["layer"].tolist() == [0, 0, 1, 1, 2, 2]
    assert table["feature"].tolist() == view.top_idx_TLK[2, :, :2].reshape(-1).tolist()
    assert all(isinstance(x, str) and x for x in table["label"])
    with pytest.raises(ValueError, match="out of range"):
        token_table(view, view.n_tokens, read_layer_map(loaded.folder))
    assert not math.isnan(float(table["of typical norm"].iloc[0]))


def test_tab_callbacks_answer_bad_input_with_gr_error_and_rows_choose_features(tiny_atlas):
    import gradio as gr

    from ui import live as ui_live

    plot, _, _, table, view = ui_live.run_live(str(tiny_atlas), "the cat 🙂 sat")
    assert view.n_tokens == 4 and len(plot.data) >= 1 and table.columns[:2].tolist() == [
        "layer", "feature"]
    for bad in ("", "\x00"):
        with pytest.raises(gr.Error, match="empty"):
            ui_live.run_live(str(tiny_atlas), bad)
    with pytest.raises(gr.Error, match="SAE set"):
        ui_live.run_live("", "text")
    with pytest.raises(gr.Error, match="out of range"):
        ui_live.pick_token(str(tiny_atlas), view, 99)
    hits, _ = ui_search.run_search(str(tiny_atlas), "Paris is big")
    assert hits.columns[:2].tolist() == ["layer", "feature"]
    with pytest.raises(gr.Error, match="not in this layer map"):
        ui_search.run_label_search(str(tiny_atlas), 9, "pos", "NOUN", 0.5, 1)
    evt = gr.SelectData(None, {"index": [0, 2], "value": 0, "row_value": hits.iloc[0].tolist()})
    chosen, md, _ = ui_choice.choose(hits, evt)
    assert chosen == (int(hits["layer"][0]), int(hits["feature"][0])) and "feature" in md


def test_peak_score_without_a_feature_index_is_a_message(tiny_atlas, tmp_path):
    import shutil

    import gradio as gr

    folder = tmp_path / "no_index"  # other tests may add an index to the shared tiny atlas
    shutil.copytree(tiny_atlas, folder, ignore=shutil.ignore_patterns("features"))
    with pytest.raises(gr.Error, match="no feature index"):
        ui_search.run_search(str(folder), "Paris", "peak")


def test_label_search_says_how_many_or_what_the_best_is(tiny_atlas):
    from sae_core.explore.search import features_by_label

    lmap = read_layer_map(tiny_atlas)
    table, status = ui_search.run_label_search(str(tiny_atlas), 1, "pos", "NOUN", 0.0, 1)
    assert len(table) == len(features_by_label(lmap, 1, "pos", "NOUN")) > 0
    assert status.startswith(f"{len(table)} feature(s)")
    table, status = ui_search.run_label_search(str(tiny_atlas), "all layers", "pos", "NOUN", 1.0,
                                             10_000)
    assert table.empty and status.startswith("No feature passes")
