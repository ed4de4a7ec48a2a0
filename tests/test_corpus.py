import json

import pytest
import torch

from sae_core.corpus import DEFAULT_CORPUS, load_texts, split_windows, token_windows


def test_windows_join_documents_with_eos(lm):
    tok = lm.tokenizer
    w = token_windows(tok, ["the cat sat", "a dog ran ."], seq_len=4, prepend_bos=False)
    flat = w.reshape(-1).tolist()
    assert w.shape == (2, 4)  # 3 + eos + 4 + eos = 9 tokens -> 2 full windows
    assert flat[3] == tok.eos_token_id
    assert tok.decode(flat[:3]) == "the cat sat"


def test_bos_is_explicit(lm):
    tok = lm.tokenizer
    with pytest.raises(ValueError, match="no BOS"):
        token_windows(tok, ["the cat"], seq_len=4, prepend_bos=True)
    tok.bos_token = "<unk>"
    w = token_windows(tok, ["the cat sat on the mat ."] * 3, seq_len=5)
    assert (w[:, 0] == tok.bos_token_id).all()


def test_local_files(tmp_path):
    (tmp_path / "a.txt").write_text("first para\n\nsecond para\n")
    assert load_texts(str(tmp_path / "a.txt")) == ["first para", "second para"]
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "hi"}) + "\n\n")
    assert load_texts(str(tmp_path / "b.jsonl")) == ["hi"]
    (tmp_path / "c.jsonl").write_text('{"text": "ok"}\n{"nope": 1}\n')
    with pytest.raises(ValueError, match=r"c\.jsonl:2"):
        load_texts(str(tmp_path / "c.jsonl"))
    with pytest.raises(ValueError, match="does not exist"):
        load_texts(str(tmp_path / "missing.txt"))


def test_bundled_corpus_is_large_and_mixed():
    lines = DEFAULT_CORPUS.read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    genres = {r["genre"] for r in rows}
    assert len(genres) >= 2
    assert sum(len(r["text"]) for r in rows) > 1_200_000  # ~4 chars/token -> > 300k tokens


def test_split_keeps_held_out_apart():
    w = torch.arange(80).view(20, 4)
    train, test = split_windows(w, 3)
    assert len(train) + len(test) == len(w) and len(test) == 3
    seen = {tuple(row) for row in train.tolist()}
    assert not any(tuple(row) in seen for row in test.tolist())
    assert test[:, 0].tolist() != [68, 72, 76]  # drawn at random, not the last windows
    assert torch.equal(split_windows(w, 3)[1], test)  # seeded
