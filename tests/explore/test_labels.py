"""Labels with the real spaCy pipeline and SmolLM2's tokenizer, on tiny texts."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from sae_core.corpus import token_windows
from sae_core.explore import labels as labels_mod
from sae_core.explore.labels import (
    SHAPES,
    _chunks,
    labelled_windows,
    load_nlp,
    load_or_build_labels,
    token_shapes,
)
from sae_core.lm import embedded_model_dir

TEXTS = [
    "The café owner in Paris sold 12 croissants 🙂 to Anna. Extraordinarily, it rained!",
    "Yesterday Zoë paid $3.50 for naïve über-fast trains in London.\n\n  Yes.",
    "def f(x):\n    return x + 1",
]


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(embedded_model_dir())


@pytest.fixture(scope="module")
def nlp():
    return load_nlp()


def one_window(tok, nlp, text):
    """A single window holding exactly `text` + EOS: (token strings, {task: names})."""
    n = len(tok(text, add_special_tokens=False).input_ids) + 1
    lw = labelled_windows(tok, [text], n, nlp=nlp, prepend_bos=False)
    assert lw.windows.shape == (1, n)
    ids = lw.windows[0].tolist()
    pieces = [tok.decode([i]) for i in ids]
    names = {t: [lw.vocab[t][j] for j in lw.labels[t][0]] for t in lw.labels}
    return pieces, names


@pytest.mark.parametrize("seq_len", [5, 16, 33])
@pytest.mark.parametrize("prepend_bos", [None, False])
def test_windows_equal_token_windows(tok, nlp, seq_len, prepend_bos):
    lw = labelled_windows(tok, TEXTS, seq_len, nlp=nlp, prepend_bos=prepend_bos)
    expected = token_windows(tok, TEXTS, seq_len, prepend_bos=prepend_bos)
    assert lw.windows.dtype == expected.dtype and torch.equal(lw.windows, expected)
    for task, lab in lw.labels.items():
        assert lab.shape == tuple(expected.shape) and lab.dtype == np.int16
        assert lab.min() >= 0 and lab.max() < len(lw.vocab[task])
    at_eos = lw.labels["pos"][expected == tok.eos_token_id]
    assert len(at_eos) > 0 and (at_eos == lw.vocab["pos"].index("sep")).all()
    if prepend_bos is None:  # SmolLM2 has a BOS: position 0 is a separator in every task
        assert (lw.labels["dep"][:, 0] == lw.vocab["dep"].index("sep")).all()
        assert (lw.labels["shape"][:, 0] == SHAPES.index("space/other")).all()


def test_expected_labels_on_a_sentence(tok, nlp):
    pieces, lab = one_window(tok, nlp, TEXTS[0])
    at = {p: i for i, p in reversed(list(enumerate(pieces)))}  # first occurrence
    paris = at[" Paris"]
    assert (lab["pos"][paris], lab["ent"][paris], lab["shape"][paris]) == (
        "PROPN", "GPE", "word_start")
    assert lab["dep"][at[" sold"]] == "ROOT" and lab["pos"][at[" sold"]] == "VERB"
    # " 12" is split into " ", "1", "2": the space alone covers no spaCy token
    one = at["1"]
    assert pieces[one - 1: one + 2] == [" ", "1", "2"]
    assert [lab["pos"][i] for i in (one - 1, one, one + 1)] == ["space", "NUM", "NUM"]
    assert [lab["shape"][i] for i in (one - 1, one, one + 1)] == ["space/other", "digit", "digit"]
    assert lab["ent"][one] == "CARDINAL"
    # a multi-token word: every piece takes the word's labels; only the first starts it
    word = pieces[at[" cro"]: at[" cro"] + 3]
    assert "".join(word) == " croissants"
    assert {lab["pos"][i] for i in range(at[" cro"], at[" cro"] + 3)} == {"NOUN"}
    assert [lab["shape"][i] for i in range(at[" cro"], at[" cro"] + 3)] == [
        "word_start", "word_cont", "word_cont"]
    extra = at[" Extra"]
    assert {lab["pos"][i] for i in range(extra, extra + 3)} == {"ADV"}
    assert lab["pos"][at["."]] == "PUNCT" and lab["shape"][at["."]] == "punct"
    assert lab["dep"][at[","]] == "punct"
    assert lab["shape"][at[" 🙂"]] == "space/other"
    assert lab["ent"][at[" owner"]] == "none"
    assert [lab[t][-1] for t in ("pos", "tag", "dep", "ent", "shape")] == [
        "sep", "sep", "sep", "sep", "space/other"]  # the EOS separator


def test_unicode_and_split_characters(tok, nlp):
    pieces, lab = one_window(tok, nlp, TEXTS[1])
    at = {p: i for i, p in reversed(list(enumerate(pieces)))}
    zo = at[" Zo"]
    assert pieces[zo + 1] == "ë" and lab["pos"][zo] == lab["pos"][zo + 1] == "PROPN"
    assert lab["ent"][zo] == lab["ent"][zo + 1] == "PERSON"
    assert [lab["shape"][zo], lab["shape"][zo + 1]] == ["word_start", "word_cont"]
    # " über" is " " + first byte of ü, second byte of ü, "ber": one spaCy token
    u = at["ber"] - 2
    assert pieces[u: u + 3] == [" \ufffd", "\ufffd", "ber"]  # a byte alone decodes to U+FFFD
    assert lab["pos"][u] == lab["pos"][u + 1] == lab["pos"][u + 2]
    assert [lab["shape"][i] for i in range(u, u + 3)] == ["word_start", "word_cont", "word_cont"]
    three = at["3"]
    assert pieces[three: three + 4] == ["3", ".", "5", "0"]  # spaCy: one token "3.50"
    assert {lab["pos"][i] for i in range(three, three + 4)} == {"NUM"}
    assert [lab["shape"][i] for i in range(three, three + 4)] == [
        "digit", "punct", "digit", "digit"]
    assert lab["pos"][at[" $"]] == "SYM" and lab["shape"][at[" $"]] == "punct"
    assert lab["ent"][at[" London"]] == "GPE"
    ws = at["\n\n "]  # whitespace only: covers no spaCy token but the whitespace one
    assert {lab[t][ws] for t in ("pos", "tag", "dep", "ent")} == {"space"}
    assert lab["pos"][ws + 1] == "INTJ" and lab["shape"][ws + 1] == "word_start"  # " Yes"


def test_special_tokens_spelled_in_text_are_separators(tok, nlp):
    pieces, lab = one_window(tok, nlp, "Hi <|im_end|> there")
    i = pieces.index("<|im_end|>")  # the literal one; the EOS separator is the last token
    assert i < len(pieces) - 1
    assert [lab[t][i] for t in ("pos", "tag", "dep", "ent", "shape")] == [
        "sep", "sep", "sep", "sep", "space/other"]
    assert lab["pos"][i + 1] not in ("sep", "space") and lab["shape"][i + 1] == "word_start"


def test_shapes_by_definition(tok):
    text = "The naïve café🙂🙂 costs $12.50, ok?\n\n  Über-fast"
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = np.array(enc.offset_mapping)
    got = [SHAPES[s] for s in token_shapes(text, offsets)]
    spans = [text[a:b] for a, b in enc.offset_mapping]
    # 🙂 and Ü are split into byte tokens that share one character span
    assert spans == ["The", " na", "ïve", " café", "🙂", "🙂", "🙂", "🙂", " costs", " $", "1",
                     "2", ".", "5", "0", ",", " ok", "?", "\n\n ", " Ü", "Ü", "ber", "-", "fast"]
    assert got == [
        "word_start", "word_start", "word_cont", "word_start",
        "space/other", "space/other", "space/other", "space/other",  # emoji: symbol So
        "word_start", "punct", "digit", "digit", "punct", "digit", "digit", "punct",
        "word_start", "punct", "space/other",
        "word_start", "word_cont", "word_cont",  # second byte of Ü continues the word
        "punct", "word_start",  # after a hyphen a new word starts
    ]


def test_labels_match_a_slow_reference(tok, nlp):
    """Each token's label is that of the spaCy token covering its first visible char."""
    for text in TEXTS:
        pieces, lab = one_window(tok, nlp, text)
        doc = nlp(text)
        offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True).offset_mapping
        for i, (a, b) in enumerate(offsets):
            visible = [p for p in range(a, b) if not text[p].isspace()]
            expected = "space"
            if visible:
                sp = next(t for t in doc if t.idx <= visible[0] < t.idx + len(t))
                expected = "space" if sp.is_space else sp.pos_
            assert lab["pos"][i] == expected, (i, pieces[i])


def test_long_texts_are_cut_into_chunks(tok, nlp, monkeypatch):
    assert _chunks("ab\ncd\nef") == [(0, 8)]
    monkeypatch.setattr(labels_mod, "MAX_CHARS", 4)
    assert _chunks("ab\ncd\nefghij") == [(0, 3), (3, 6), (6, 10), (10, 12)]
    text = "Paris is big.\nThe cat sat on the mat.\nLondon is old."
    monkeypatch.setattr(labels_mod, "MAX_CHARS", 20)
    pieces, lab = one_window(tok, nlp, text)
    at = {p: i for i, p in enumerate(pieces)}
    assert lab["pos"][at["London"]] == "PROPN"  # offsets shifted to the right chunk
    assert lab["pos"][at[" mat"]] == "NOUN" and lab["pos"][at["Paris"]] == "PROPN"


def test_cache_round_trip_and_staleness(tok, nlp, tmp_path, monkeypatch):
    path = tmp_path / "labels" / "corpus"
    built = load_or_build_labels(tok, TEXTS, 16, path, nlp=nlp)
    assert (tmp_path / "labels" / "corpus.safetensors").is_file()
    meta = json.loads((tmp_path / "labels" / "corpus.json").read_text())
    assert meta["vocab"] == built.vocab and len(meta["key"]) == 64

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt although the cache matches")

    monkeypatch.setattr(labels_mod, "labelled_windows", no_build)
    cached = load_or_build_labels(tok, TEXTS, 16, path, nlp=nlp)
    assert torch.equal(cached.windows, built.windows) and cached.vocab == built.vocab
    for task in built.labels:
        assert np.array_equal(cached.labels[task], built.labels[task])
    # any change in texts or seq_len is stale and rebuilds
    with pytest.raises(AssertionError, match="rebuilt"):
        load_or_build_labels(tok, [*TEXTS[:2], TEXTS[2] + "!"], 16, path, nlp=nlp)
    with pytest.raises(AssertionError, match="rebuilt"):
        load_or_build_labels(tok, TEXTS, 17, path, nlp=nlp)
