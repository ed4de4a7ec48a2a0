import pytest
import torch

from sae_core.activations import keep_mask
from sae_core.config import TrainConfig
from sae_core.train.trainer import k_at, sae_batches, train_saes

HOOKS = ["layers.0", "layers.2"]


def _windows(n=48, seq=16, seed=0):
    return torch.randint(3, 64, (n, seq), generator=torch.Generator().manual_seed(seed))


def _cfg(**kw):
    base = dict(expansion=4, k=4, batch_tokens=64, lm_batch_tokens=64, lr=3e-3, dead_tokens=64,
                bf16=False)
    return TrainConfig(**(base | kw))


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_fvu_goes_down_for_every_layer(lm, arch):
    trainer = train_saes(lm, _windows(n=256), HOOKS, _cfg(lr=1e-2, architecture=arch,
                                                          l1_coeff=0.1))
    first = trainer.layers  # last_fvu is the final batch's FVU
    for h in HOOKS:
        assert first[h].last_fvu < 0.8, (h, first[h].last_fvu)
        w = first[h].sae.W_dec.detach()
        torch.testing.assert_close(w.norm(dim=-1), torch.ones(len(w)))


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


def test_k_schedule_anneals_to_target():
    cfg = TrainConfig(k=32, k_start=128, k_anneal_frac=0.5)
    assert k_at(cfg, 0, 100) == 128
    assert k_at(cfg, 25, 100) == 80
    assert k_at(cfg, 50, 100) == 32 == k_at(cfg, 99, 100)


def test_keep_mask_drops_position_zero_and_massive_tokens():
    acts = torch.ones(2, 5, 4)
    acts[1, 3] *= 50
    keep = keep_mask(acts, median_norm=2.0, outlier_factor=10)
    assert keep.tolist() == [[False, True, True, True, True], [False, True, True, False, True]]


def test_bad_inputs(lm):
    with pytest.raises(ValueError, match="out of range"):
        train_saes(lm, _windows(), ["layers.9"], _cfg())
    with pytest.raises(ValueError, match="need at least"):
        train_saes(lm, _windows(n=2), HOOKS, _cfg())


def test_max_tokens_caps_whole_batches(lm):
    # 48 windows of 16 tokens = 12 batches of 64; a cap of 200 tokens takes ceil(200/64) = 4.
    trainer = train_saes(lm, _windows(), HOOKS, _cfg(max_tokens=200, shuffle_batches=0))
    assert trainer.step_no == 4
    assert train_saes(lm, _windows(), HOOKS, _cfg(max_tokens=None, shuffle_batches=0)).step_no == 12


def test_sae_batches_split_evenly():
    assert [len(b) for b in sae_batches(torch.zeros(4080, 2), 2048)] == [2040, 2040]
    assert [len(b) for b in sae_batches(torch.zeros(100, 2), 2048)] == [100]
    assert sum(len(b) for b in sae_batches(torch.zeros(5000, 2), 2048)) == 5000
