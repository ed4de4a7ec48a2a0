"""Control models (random-init, shuffled) and the control atlases built through them."""

import json
from dataclasses import replace

import pytest
import torch

from sae_core.__main__ import parser
from sae_core.atlas.build import build_atlas
from sae_core.atlas.layout import control_atlases, open_with, read_info, seed_atlases
from sae_core.cli_options import config_from_args
from sae_core.config import BuildConfig, TrainConfig
from sae_core.lm import LM
from sae_core.model_controls import apply_control, lm_for_atlas, random_init, shuffled
from tests.conftest import tiny_lm


def trained_like() -> LM:
    """The tiny model with norm weights off their initial 1.0, as a trained model's are:
    else a re-drawn norm would equal the original by construction."""
    lm = tiny_lm()
    gen = torch.Generator().manual_seed(5)
    for name, p in lm.model.named_parameters():
        if "norm" in name:
            p.copy_(1 + 0.3 * torch.randn(p.shape, generator=gen))
    return lm


def params(lm) -> dict[str, torch.Tensor]:
    return dict(lm.model.named_parameters())


def test_random_init_keeps_shapes_and_dtypes_and_none_of_the_weights():
    real = trained_like()
    before = {n: p.clone() for n, p in params(real).items()}
    rand = random_init(real, seed=11)  # not 0: tiny_lm itself is the seed-0 draw
    assert rand.tokenizer is real.tokenizer and rand.name == real.name
    assert rand.n_layers == real.n_layers and rand.d_model == real.d_model
    assert list(params(rand)) == list(params(real))
    for name, p in params(real).items():
        q = params(rand)[name]
        assert q.shape == p.shape and q.dtype == p.dtype and q.device == p.device
        assert not torch.equal(q, p), name
        if q.std() > 0:  # drawn, not a constant (norms start at 1)
            corr = torch.corrcoef(torch.stack([p.flatten(), q.flatten()]))[0, 1]
            assert abs(corr) < 0.2, (name, corr)
        assert torch.equal(p, before[name])  # the real model is untouched


def test_random_init_is_deterministic_in_the_seed_and_leaves_the_global_rng():
    real = trained_like()
    state = torch.random.get_rng_state()
    a, b, c = random_init(real, 3), random_init(real, 3), random_init(real, 4)
    assert torch.equal(state, torch.random.get_rng_state())
    assert all(torch.equal(p, params(b)[n]) for n, p in params(a).items())
    assert any(not torch.equal(p, params(c)[n]) for n, p in params(a).items())


def test_random_init_runs_forward():
    rand = random_init(tiny_lm(), 0)
    logits = rand.model(torch.tensor([[1, 2, 3, 4]])).logits
    assert logits.shape == (1, 4, rand.model.config.vocab_size) and logits.isfinite().all()


def test_shuffled_keeps_each_tensors_values_in_another_order():
    real = trained_like()
    before = {n: p.clone() for n, p in params(real).items()}
    shuf = shuffled(real, seed=0)
    for name, p in params(real).items():
        q = params(shuf)[name]
        assert q.shape == p.shape and q.dtype == p.dtype
        assert torch.equal(q.flatten().sort().values, p.flatten().sort().values), name
        assert not torch.equal(q, p), name
        assert torch.equal(p, before[name])
    again = shuffled(real, seed=0)
    assert all(torch.equal(p, params(again)[n]) for n, p in params(shuf).items())


def test_apply_control_and_the_atlas_record():
    real = tiny_lm()
    assert apply_control(real, "none") is real
    assert lm_for_atlas(real) is real
    again = lm_for_atlas(real, "random-init", 2)
    assert all(torch.equal(p, params(random_init(real, 2))[n]) for n, p in params(again).items())
    assert (again.control, again.control_seed) == ("random-init", 2)
    # the control model itself passes through; another control, or a control of it, does not
    assert lm_for_atlas(again, "random-init", 2) is again
    with pytest.raises(ValueError, match="seed 2"):
        lm_for_atlas(again, "random-init", 3)
    with pytest.raises(ValueError, match="already the random-init control"):
        apply_control(again, "shuffled")
    with pytest.raises(ValueError, match="unknown control"):
        apply_control(real, "zeros")
    with pytest.raises(ValueError, match="control"):
        BuildConfig(control="zeros")


def test_the_cli_option_comes_from_the_config():
    args = parser().parse_args(["train", "--control", "random-init"])
    assert config_from_args(BuildConfig, args).control == "random-init"
    with pytest.raises(SystemExit):
        parser().parse_args(["train", "--control", "zeros"])


def test_a_control_build_records_its_control_and_finds_its_twins(tmp_path, corpus_file):
    cfg = TrainConfig(expansion=2, k=4, batch_tokens=64, lm_batch_tokens=64, bf16=False,
                      max_tokens=256)

    def build(name: str, control: str = "none", seed: int = 0):
        data = BuildConfig(corpus=str(corpus_file), seq_len=16, held_out=8, control=control,
                           layers=(0, 2) if seed else None)
        return build_atlas(tmp_path / name, lm=trained_like(), data=data,
                           cfg=replace(cfg, seed=seed))

    real, rand, other_seed = build("real"), build("rand", "random-init"), build("s1", seed=1)
    info = read_info(rand)
    assert info.control == "random-init" and info.control_seed == 0
    assert info.control_of == "tiny-llama" == info.model
    assert read_info(real).control == "none"
    assert "control" not in json.loads((real / "atlas.json").read_text())
    assert control_atlases(real) == {"random-init": rand}
    assert control_atlases(rand) == {"none": real}
    assert seed_atlases(real) == {0: real, 1: other_seed} and seed_atlases(rand) == {0: rand}
    # the control's SAEs read other activations: other SAE files
    assert read_info(rand).sae_fingerprint != read_info(real).sae_fingerprint
    # opened with the real model, a control atlas runs through its control model
    opened = open_with(rand, trained_like())
    assert opened.lm.control == "random-init"
    assert all(torch.equal(p, params(random_init(trained_like(), 0))[n])
               for n, p in params(opened.lm).items())
    assert open_with(real, trained_like()).lm.control == "none"
