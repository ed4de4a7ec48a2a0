import re
from dataclasses import replace

import pytest
import torch

from sae_core.train.checkpoint import ResumeRefused
from sae_core.train.loop import train_saes
from tests.train.windows import HOOKS, _cfg, _windows


@pytest.mark.parametrize("arch", ["topk", "relu", "batchtopk", "matryoshka"])
def test_interrupted_run_resumes_to_identical_weights(lm, tmp_path, arch):
    # shuffle_batches 2: SAE steps (and BatchTopK's threshold updates) start at batch 3, so
    # the checkpoint at batch 4 holds a trained state, moments and threshold included
    cfg = _cfg(architecture=arch, checkpoint_every=2, shuffle_batches=2,
               matryoshka_prefixes=(0.25, 1.0))
    full = train_saes(lm, _windows(), HOOKS, cfg)

    class Interrupt(Exception):
        pass

    def stop_after_5(done, total, stats):
        if done == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_saes(lm, _windows(), HOOKS, cfg, checkpoint_dir=tmp_path, progress=stop_after_5)
    seen = []
    resumed = train_saes(lm, _windows(), HOOKS, cfg, checkpoint_dir=tmp_path,
                         progress=lambda d, t, s: seen.append(d))
    assert seen[0] == 5  # restarted after the checkpoint at batch 4
    for h in HOOKS:
        a, b = full.layers[h].trainer, resumed.layers[h].trainer
        if arch in ("batchtopk", "matryoshka"):
            assert a.threshold == b.threshold and a.threshold == a.threshold  # not NaN
        for name, t in a.final_sae().tensors().items():
            torch.testing.assert_close(t, b.final_sae().tensors()[name], rtol=0, atol=0,
                                       msg=f"{h} {name}")


@pytest.mark.parametrize("change, reason", [
    ("config", "k (checkpoint: 4, now: 2)"),
    ("windows", "windows (checkpoint: "),
    ("hookpoints", "hookpoints (checkpoint: layers.0,layers.2, now: layers.0)"),
    ("model", "model (checkpoint: tiny-llama, now: other-llama)"),
    ("corpus", "corpus (checkpoint: a.jsonl, now: b.jsonl)"),
])
def test_resume_from_other_data_or_settings_is_refused(lm, tmp_path, change, reason):
    cfg, windows, hooks = _cfg(checkpoint_every=1), _windows(), HOOKS
    train_saes(lm, windows, hooks, cfg, checkpoint_dir=tmp_path, data={"corpus": "a.jsonl"})
    data = {"corpus": "b.jsonl" if change == "corpus" else "a.jsonl"}
    cfg = _cfg(k=2, checkpoint_every=1) if change == "config" else cfg
    windows = windows.flip(0) if change == "windows" else windows
    hooks = hooks[:1] if change == "hookpoints" else hooks
    lm = replace(lm, name="other-llama") if change == "model" else lm
    with pytest.raises(ResumeRefused, match=re.escape(reason)):
        train_saes(lm, windows, hooks, cfg, checkpoint_dir=tmp_path, data=data)
