import pytest
import torch

from sae_core.train.loop import train_saes
from tests.train.windows import HOOKS, _cfg, _windows


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_interrupted_run_resumes_to_identical_weights(lm, tmp_path, arch):
    cfg = _cfg(architecture=arch, checkpoint_every=2)
    full = train_saes(lm, _windows(), HOOKS, cfg)

    class Interrupt(Exception):
        pass

    def stop_after_3(done, total, stats):
        if done == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_saes(lm, _windows(), HOOKS, cfg, checkpoint_dir=tmp_path, progress=stop_after_3)
    seen = []
    resumed = train_saes(lm, _windows(), HOOKS, cfg, checkpoint_dir=tmp_path,
                         progress=lambda d, t, s: seen.append(d))
    assert seen[0] == 3  # restarted after the checkpoint at batch 2
    for h in HOOKS:
        for (name, a), b in zip(full.layers[h].sae.named_parameters(),
                                resumed.layers[h].sae.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{h} {name}")


def test_checkpoint_with_other_config_is_refused(lm, tmp_path):
    train_saes(lm, _windows(), HOOKS, _cfg(checkpoint_every=1), checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="another training config"):
        train_saes(lm, _windows(), HOOKS, _cfg(k=2, checkpoint_every=1), checkpoint_dir=tmp_path)
