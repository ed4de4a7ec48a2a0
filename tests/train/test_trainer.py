import pytest
import torch

from sae_core.config import TrainConfig
from sae_core.train.loop import train_saes
from sae_core.train.trainer import k_at, sae_batches
from tests.train.windows import HOOKS, _cfg, _windows


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_fvu_goes_down_for_every_layer(lm, arch):
    trainer = train_saes(lm, _windows(n=256), HOOKS, _cfg(lr=1e-2, architecture=arch,
                                                          l1_coeff=0.1))
    first = trainer.layers  # last_fvu is the final batch's FVU
    for h in HOOKS:
        assert first[h].last_fvu < 0.8, (h, first[h].last_fvu)
        w = first[h].sae.W_dec.detach()
        torch.testing.assert_close(w.norm(dim=-1), torch.ones(len(w)))


def test_k_schedule_anneals_to_target():
    cfg = TrainConfig(k=32, k_start=128, k_anneal_frac=0.5)
    assert k_at(cfg, 0, 100) == 128
    assert k_at(cfg, 25, 100) == 80
    assert k_at(cfg, 50, 100) == 32 == k_at(cfg, 99, 100)


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


def test_each_seed_and_hookpoint_has_its_own_sae_seed():
    """A second seed trained on every third layer must not reuse the first seed's draws at
    the same layer (with seed + position it did: seed 1 at its 2nd layer == seed 0 at its
    3rd), and a layer's seed does not depend on which other layers train beside it."""
    from sae_core.train.trainer import layer_seed

    seeds = {(s, h): layer_seed(s, f"layers.{h}") for s in range(4) for h in range(30)}
    assert len(set(seeds.values())) == len(seeds)
    assert layer_seed(1, "layers.2") != layer_seed(0, "layers.2")
    assert layer_seed(0, "layers.2.mlp") != layer_seed(0, "layers.2")
