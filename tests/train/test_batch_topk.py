"""BatchTopK and Matryoshka SAEs: the batch-wide selection, the inference threshold, the nested
prefix losses, a build with --arch batchtopk and resume."""

import argparse
import json

import pytest
import torch

from sae_core.atlas.build import build_atlas
from sae_core.atlas.layout import open_with
from sae_core.cli_options import add_config_args, config_from_args
from sae_core.config import BuildConfig, SaeConfig, TrainConfig
from sae_core.explore.live import live_view
from sae_core.metrics import fvu
from sae_core.sae import Sae
from sae_core.train.batch_topk import (
    batch_topk,
    batch_topk_step_grads,
    prefix_fvus,
    prefix_sizes,
)
from sae_core.train.trainer import SaeTrainer
from tests.tiny import WORDS


def planted(n, d_in=16, n_feat=48, per_token=3, seed=0):
    """Rows that are sums of `per_token` of `n_feat` random unit directions with positive
    weights (the same directions for every seed offset of the rows)."""
    dirs = torch.randn(n_feat, d_in, generator=torch.Generator().manual_seed(99))
    dirs /= dirs.norm(dim=-1, keepdim=True)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.rand(n, n_feat, generator=gen).topk(per_token, dim=-1).indices
    codes = torch.zeros(n, n_feat).scatter_(1, idx, 1 + torch.rand(n, per_token, generator=gen))
    return codes @ dirs + 0.01 * torch.randn(n, d_in, generator=gen)


def test_batch_topk_keeps_the_k_n_largest_of_the_batch():
    pre = torch.randn(32, 50, generator=torch.Generator().manual_seed(0)) + 1.0
    acts, kept = batch_topk(pre, k=5)
    assert int((acts > 0).sum()) == 5 * 32 == len(kept)
    assert float(acts[acts > 0].min()) >= float(pre[acts == 0].max())  # nothing larger dropped
    per_token = (acts > 0).sum(1)
    assert per_token.min() < 5 < per_token.max()  # tokens differ, the batch has k per token
    torch.testing.assert_close(acts[acts > 0], pre[acts > 0])


def _train(arch, steps, **kw):
    x = planted(256 * steps, seed=1)
    cfg = TrainConfig(architecture=arch, k=3, expansion=4, lr=3e-3, batch_tokens=256,
                      dead_tokens=4096, **kw)
    sae = Sae.init_from_data(SaeConfig(d_in=16, d_sae=64, architecture="topk", k=3), x[:1024],
                             encoder_scale=cfg.encoder_scale())
    trainer = SaeTrainer(sae, cfg, steps)
    fvus = [trainer.step(rows) for rows in x.split(256)]
    return trainer, fvus


@pytest.mark.parametrize("arch", ["batchtopk", "matryoshka"])
def test_inference_threshold_gives_the_training_l0_on_held_out_data(arch):
    trainer, fvus = _train(arch, 300)
    assert fvus[-1] < 0.5 * fvus[0], (fvus[0], fvus[-1])
    sae = trainer.final_sae()
    assert sae.cfg.architecture == "jumprelu" and sae.metadata["trained_as"] == arch
    t = sae.threshold.detach()
    assert float(t.min()) == float(t.max()) == pytest.approx(trainer.threshold, rel=1e-6)
    assert trainer.threshold > 0
    held_out = planted(4096, seed=2)
    with torch.no_grad():
        l0 = float((sae.encode(held_out) > 0).sum(1).float().mean())
        _, kept = batch_topk(trainer.sae.pre_acts(held_out), 3)
    assert abs(l0 - 3) < 0.1 * 3, l0  # training keeps exactly k per token on average
    assert abs(trainer.threshold - float(kept.min())) < 0.1 * trainer.threshold


def _masked_prefix_loss(sae, x, k, sizes):
    """The mean prefix FVU another way: a dense decode of the activations masked to the
    first m latents, FVU from sae_core.metrics."""
    acts, _ = batch_topk(sae.pre_acts(x), k)
    terms = []
    for m in sizes:
        mask = torch.arange(sae.cfg.d_sae) < m
        terms.append(fvu(x, sae.decode(acts * mask)))
    return torch.stack(terms)


def test_matryoshka_loss_is_the_mean_of_the_prefix_fvus():
    x = planted(512, seed=3)
    sae = Sae.init_from_data(SaeConfig(d_in=16, d_sae=64, k=3), x, seed=1, encoder_scale=0.5)
    sizes = prefix_sizes((0.0625, 0.25, 1.0), 64)
    assert sizes == [4, 16, 64]
    other = _masked_prefix_loss(sae, x, 3, sizes)
    assert other[0] > other[1] > other[2]  # more latents, better reconstruction
    acts, _ = batch_topk(sae.pre_acts(x), 3)
    torch.testing.assert_close(prefix_fvus(acts, sae.W_dec, sae.b_dec, x,
                                           (x - x.mean(0)).pow(2).sum(), sizes), other)
    other.mean().backward()
    want = {n: p.grad.clone() for n, p in sae.named_parameters()}
    batch_topk_step_grads(sae, x, 3, sizes=sizes)
    for n, p in sae.named_parameters():
        torch.testing.assert_close(p.grad, want[n], msg=n)


def test_first_prefix_latents_learn_from_every_term():
    x = planted(512, seed=4)
    sae = Sae.init_from_data(SaeConfig(d_in=16, d_sae=64, k=3), x, seed=2, encoder_scale=0.5)
    with torch.no_grad():
        sae.b_enc[:4] += 1.0  # the first prefix fires on some tokens
    sizes = [4, 16, 64]
    acts, _ = batch_topk(sae.pre_acts(x), 3)
    terms = prefix_fvus(acts, sae.W_dec, sae.b_dec, x, (x - x.mean(0)).pow(2).sum(), sizes)
    for i, m in enumerate(sizes):
        g = torch.autograd.grad(terms[i], sae.W_dec, retain_graph=True)[0].norm(dim=-1)
        assert bool((g[:4] > 0).all()), (i, g[:4])  # every term trains the first prefix
        assert float(g[m:].sum()) == 0  # and no term trains latents past its prefix


def test_cli_parses_the_new_options():
    parser = argparse.ArgumentParser()
    add_config_args(parser, TrainConfig, aliases={"architecture": "--arch"})
    args = parser.parse_args(["--arch", "matryoshka", "--matryoshka-prefixes", "0.125,0.5,1",
                              "--resample-every", "100"])
    cfg = config_from_args(TrainConfig, args)
    assert cfg.architecture == "matryoshka" and cfg.matryoshka_prefixes == (0.125, 0.5, 1.0)
    assert cfg.resample_every == 100 and not cfg.ghost_grads
    with pytest.raises(ValueError, match="increasing fractions"):
        TrainConfig(matryoshka_prefixes=(0.5, 0.25, 1.0))
    with pytest.raises(ValueError, match="ghost_grads works with architecture 'relu' only"):
        TrainConfig(architecture="batchtopk", ghost_grads=True)


def test_batchtopk_build_loads_as_jumprelu_and_runs_live(tmp_path, lm):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": " ".join(
        WORDS[(i * 5 + j) % len(WORDS)] for j in range(40))}) for i in range(40)))
    parser = argparse.ArgumentParser()
    add_config_args(parser, TrainConfig, aliases={"architecture": "--arch"})
    cfg = config_from_args(TrainConfig, parser.parse_args(
        ["--arch", "batchtopk", "--expansion", "2", "--k", "4", "--batch-tokens", "64",
         "--lm-batch-tokens", "64", "--no-bf16"]))
    out = build_atlas(tmp_path / "atlas", data=BuildConfig(corpus=str(corpus), seq_len=16,
                                                           held_out=4), cfg=cfg, lm=lm)
    loaded = open_with(out, lm)
    for sae in loaded.saes.values():
        assert sae.cfg.architecture == "jumprelu" and sae.metadata["trained_as"] == "batchtopk"
        t = sae.threshold.detach()  # one learned threshold for every latent
        assert float(t.min()) == float(t.max()) > 0
    view = live_view(loaded, "the cat sat on the mat", top=3)
    assert view.hookpoints == tuple(loaded.hookpoints) and len(view.token_ids) == 6
    assert bool((view.top_idx_TLK >= 0).any())  # features fire through the jumprelu SAEs
