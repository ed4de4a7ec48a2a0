"""Probing reads documents the SAEs never trained on: on a tiny build whose training windows
are recorded as the training loop runs, no document of probing's token split touches one."""

import dataclasses
import json
import random

import pytest
import torch

from sae_core.atlas.build import build_atlas
from sae_core.atlas.layout import load_atlas
from sae_core.config import BuildConfig, TrainConfig
from sae_core.corpus import load_texts, token_windows
from sae_core.explore.firings import LabelledPass
from sae_core.explore.one_pass import after_training
from sae_core.explore.probing import probe_unseen, read_probing
from sae_core.explore.unseen import unseen_documents, unseen_pass
from sae_core.train import loop
from tests.tiny import WORDS, tiny_lm

SEQ_LEN = 16


@pytest.fixture(scope="module")
def built(tmp_path_factory, monkeypatch_module):
    """A tiny atlas trained on 20 of its 36 training windows (max_tokens), and the windows
    the training loop actually ran the model on."""
    root = tmp_path_factory.mktemp("unseen")
    rng = random.Random(0)
    docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12))) for _ in range(90)]
    corpus = root / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": t}) for t in docs))
    seen: list[torch.Tensor] = []
    real = loop.run_captured

    def recording(lm, ids, *args, **kwargs):
        seen.append(ids.clone())
        return real(lm, ids, *args, **kwargs)

    monkeypatch_module.setattr(loop, "run_captured", recording)
    lm = tiny_lm()
    cfg = TrainConfig(expansion=2, k=4, batch_tokens=64, lm_batch_tokens=64, bf16=False,
                      max_tokens=320)
    out = build_atlas(root / "tiny", data=BuildConfig(corpus=str(corpus), seq_len=SEQ_LEN,
                                                      held_out=6), cfg=cfg, lm=lm)
    monkeypatch_module.undo()
    return out, lm, torch.cat(seen)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _trained_positions(lm, texts, trained_WL):
    """Flat stream positions the recorded training windows cover (matched by content)."""
    windows = token_windows(lm.tokenizer, texts, SEQ_LEN)
    hit = (windows[:, None, :] == trained_WL[None]).all(2).any(1)
    assert int(hit.sum()) == len(trained_WL.unique(dim=0))  # every window found once
    covered = torch.zeros(windows.numel() + 64, dtype=torch.bool)
    for w in hit.nonzero().squeeze(1).tolist():
        covered[w * SEQ_LEN:(w + 1) * SEQ_LEN] = True  # no BOS: a window is 16 stream tokens
    return covered, windows


def test_probing_reads_only_documents_no_training_window_touched(built):
    folder, lm, trained_WL = built
    info, _, saes, _ = load_atlas(folder)
    texts = load_texts(info.corpus)
    covered, windows = _trained_positions(lm, texts, trained_WL)
    assert len(trained_WL) == 20 and len(windows) - 6 > 20  # some windows never drawn
    start = 0
    touched = []
    for text in texts:  # each document's tokens and its EOS, counted by hand
        end = start + len(lm.tokenizer(text, add_special_tokens=False).input_ids) + 1
        touched.append(bool(covered[start:end].any()))
        start = end
    ids = unseen_documents(lm.tokenizer, texts, info)
    assert ids == [i for i, t in enumerate(touched) if not t] and len(ids) >= 5
    run = unseen_pass(lm, saes, info, texts)
    assert run.documents == ids
    chosen = token_windows(lm.tokenizer, [texts[i] for i in ids], SEQ_LEN)
    assert run.tokens == chosen.numel()
    for f in run.firings.values():  # the probe's learn and score tokens are those windows'
        assert torch.equal(f.tokens_N, chosen.reshape(-1)[f.where_N])
        assert f.heldout_N.any() and (~f.heldout_N).any()
    result = probe_unseen(LabelledPass(info, lm, saes, {}, {}, ""))
    assert result.documents == {"unseen_by_saes": True, "documents": len(ids),
                                "tokens": chosen.numel()}
    assert result.hookpoints == list(saes)


def test_a_build_probes_its_unseen_documents_in_the_pass_after_training(built, tmp_path):
    """The build's own pass writes probing on the unseen documents: its SAEs carry no
    median norm in their metadata until they are written, so the medians travel with the
    labelled pass (this build crashed when probing first read the unseen documents)."""
    folder, lm, _ = built
    info = load_atlas(folder)[0]
    cfg = TrainConfig(expansion=2, k=4, batch_tokens=64, lm_batch_tokens=64, bf16=False,
                      max_tokens=320)
    out = build_atlas(tmp_path / "one_pass", lm=lm, cfg=cfg, after=after_training,
                      data=BuildConfig(corpus=info.corpus, seq_len=SEQ_LEN, held_out=6))
    probes = read_probing(out)
    assert probes is not None and probes.documents["unseen_by_saes"] is True
    assert probes.documents["documents"] >= 5


def test_without_training_records_probing_says_so(built):
    folder, lm, _ = built
    info = load_atlas(folder)[0]
    hub_like = dataclasses.replace(info, lm_tokens=None, train_cfg={"outlier_factor": 10.0})
    assert unseen_documents(lm.tokenizer, load_texts(info.corpus), hub_like) is None
    bad = dataclasses.replace(info, train_windows=info.train_windows + 1)
    with pytest.raises(ValueError, match="windows"):
        unseen_documents(lm.tokenizer, load_texts(info.corpus), bad)
