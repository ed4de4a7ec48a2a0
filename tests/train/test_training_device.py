"""Training follows the LM's device (CPU always, CUDA where present), and the memory a build
needs is estimated before it starts, with a refusal when it cannot fit."""

import pytest
import torch

from sae_core.atlas.build import build_atlas
from sae_core.config import BuildConfig, TrainConfig
from sae_core.memory import DoesNotFit, check_memory, training_memory
from sae_core.train.loop import train_saes
from sae_core.train.ranks import SOLO, Ranks
from tests.tiny import tiny_lm
from tests.train.windows import HOOKS, _cfg, _windows

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA GPU here"))]


def _training_tensors(trainer) -> list[torch.Tensor]:
    out = []
    for state in trainer.layers.values():
        for p in state.sae.parameters():
            out += [p, p.grad, *state.trainer.opt.state[p].values()]
        out += [state.trainer.since_fired, *([state.buffer.data] if state.buffer else [])]
    return out


@pytest.mark.parametrize("device", DEVICES)
def test_every_training_tensor_lives_on_the_lms_device(tmp_path, device):
    lm = tiny_lm()
    lm.model.to(device)
    cfg = _cfg(shuffle_batches=4, checkpoint_every=2)
    trainer = train_saes(lm, _windows(), HOOKS, cfg, checkpoint_dir=tmp_path)
    tensors = _training_tensors(trainer)
    assert all(t.device.type == device for t in tensors if t.dim() > 0)
    resumed = train_saes(lm, _windows(), HOOKS, cfg, checkpoint_dir=tmp_path)  # from the end
    for a, b in zip(tensors, _training_tensors(resumed), strict=True):
        assert b.device == a.device


def test_the_estimate_counts_what_training_holds():
    """SAE weights, gradients, Adam moments and shuffle buffers: the estimate's `saes` and
    `buffers` equal the bytes of the tensors a trainer holds (dead-latent counters aside)."""
    lm, cfg = tiny_lm(), _cfg(shuffle_batches=4)
    trainer = train_saes(lm, _windows(), HOOKS, cfg)
    held = {"saes": 0, "buffers": 0}
    for state in trainer.layers.values():
        for p in state.sae.parameters():
            held["saes"] += sum(t.nbytes for t in (p, p.grad, *state.trainer.opt.state[p].values())
                                if t.dim() > 0)
        held["buffers"] += state.buffer.data.nbytes
    estimate = training_memory(lm, len(HOOKS), cfg, seq_len=16, ranks=SOLO)
    assert (estimate.saes, estimate.buffers) == (held["saes"], held["buffers"])
    split = training_memory(lm, len(HOOKS), cfg, seq_len=16, ranks=Ranks(0, 2, "data"))
    assert split.buffers == estimate.buffers // 2  # each data-parallel rank holds half


def test_a_build_that_cannot_fit_is_refused_before_any_work(tmp_path, monkeypatch):
    lm = tiny_lm()
    estimate = training_memory(lm, 3, TrainConfig(), seq_len=256, ranks=SOLO)
    with pytest.raises(DoesNotFit, match=r"needs about .* GiB on cpu .* but 0\.00 GiB is free"):
        check_memory(estimate, torch.device("cpu"), available=1000)
    check_memory(estimate, torch.device("cpu"), available=2 * estimate.total)  # fits
    monkeypatch.setattr("sae_core.memory.available_memory", lambda device: 1000)
    with pytest.raises(DoesNotFit, match="--parallel layers"):
        build_atlas(tmp_path / "atlas", lm=lm, data=BuildConfig(corpus="default"))
    assert not any(tmp_path.iterdir())  # nothing written, not even the lock
