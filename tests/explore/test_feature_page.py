"""Feature pages: bad ids are messages, token pieces join into the real tokenizer's text."""

import pytest

from sae_core.explore.feature_page import check_ids, token_pieces


def test_bad_ids_are_clear_errors(hand_atlas):
    loaded, _, _ = hand_atlas
    for hook, feat, msg in [("layers.1", 0, "not in this SAE set"),
                            ("layers.0", 48, "out of range"), ("layers.0", -1, "out of range"),
                            ("layers.0", 2.5, "whole number"), ("layers.0", "x", "whole number"),
                            ("layers.0", None, "whole number")]:
        with pytest.raises(ValueError, match=msg):
            check_ids(loaded, hook, feat)
    assert check_ids(loaded, "layers.0", "7") == 7


@pytest.mark.parametrize("text", [
    "Crème brûlée in Zürich 🦜🦜 costs 5€ — naïve 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 漢字 Constantinopolitan",
    "\n\ttabs\tand\nnew lines 👩‍👩‍👧 family",
])
def test_pieces_align_with_real_tokens(smol_tokenizer, text):
    ids = smol_tokenizer(text, add_special_tokens=False).input_ids
    pieces = token_pieces(smol_tokenizer, ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == text == smol_tokenizer.decode(ids)
    assert "\ufffd" not in "".join(pieces)
    # A word split into several tokens keeps one piece per token, in order.
    word = " Constantinopolitan"
    if word in text:
        assert any(len(p) < len(word) and p and word.startswith(p) for p in pieces)
