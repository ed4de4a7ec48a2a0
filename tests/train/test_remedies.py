"""Dead-latent remedies: ghost grads and resampling revive latents killed on purpose, and
without them the latents stay dead."""

import pytest
import torch

from sae_core.config import SaeConfig, TrainConfig
from sae_core.sae import Sae
from sae_core.train.loop import train_saes
from sae_core.train.ranks import Ranks
from sae_core.train.remedies import ghost_grad_loss, resample_dead, resample_inputs
from sae_core.train.trainer import SaeTrainer
from tests.train.windows import HOOKS, _cfg, _windows

KILLED = torch.arange(0, 32, 4)  # 8 of 32 latents


def low_rank(n, d_in=16, rank=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    basis = torch.randn(rank, d_in, generator=torch.Generator().manual_seed(7))
    return torch.randn(n, rank, generator=gen) @ basis + 0.05 * torch.randn(n, d_in, generator=gen)


def killed_trainer(arch, steps, **kw):
    """A trainer whose KILLED latents never fire: zero encoder rows, b_enc -1."""
    x = low_rank(1024)
    cfg = TrainConfig(architecture=arch, k=4, lr=3e-3, batch_tokens=128, dead_tokens=512,
                      l1_coeff=0.02, auxk_alpha=0.0, **kw)
    sae = Sae.init_from_data(SaeConfig(d_in=16, d_sae=32, architecture=arch, k=4), x,
                             encoder_scale=cfg.encoder_scale())
    with torch.no_grad():
        sae.W_enc_SD[KILLED] = 0
        sae.b_enc[KILLED] = -1.0
    return SaeTrainer(sae, cfg, steps)


def fires(trainer, x):
    with torch.no_grad():
        return (trainer.final_sae().encode(x) > 0).any(0)


@pytest.mark.parametrize("remedy", [{"ghost_grads": True}, {"resample_every": 50}])
def test_remedy_revives_killed_latents_which_stay_dead_without_it(remedy):
    x, held_out = low_rank(128 * 200, seed=1), low_rank(2048, seed=2)
    for use in (False, True):
        trainer = killed_trainer("relu", 200, **(remedy if use else {}))
        fvus = [trainer.step(rows) for rows in x.split(128)]
        revived = fires(trainer, held_out)[KILLED]
        if use:
            assert bool(revived.all()), revived
            assert fvus[-1] < 0.5, fvus[-1]
        else:
            assert not revived.any(), revived


def test_topk_trainer_resamples_dead_latents_every_n_steps():
    x = low_rank(128 * 50, seed=5)
    for every in (0, 25):
        trainer = killed_trainer("topk", 50, resample_every=every)
        for i, rows in enumerate(x.split(128), start=1):
            trainer.step(rows)
            enc = trainer.sae.W_enc_SD.detach()[KILLED].norm(dim=-1)
            if every and i == every - 1:  # dead (512 tokens unfired) but not yet resampled
                assert float(enc.sum()) == 0 and bool((trainer.since_fired[KILLED] > 512).all())
            if every and i == every:  # resampled at step 25: new rows, counted as just fired
                assert bool((enc > 0).all()) and int(trainer.since_fired[KILLED].max()) == 0
        if every:  # (not again at step 50, the last: a resampled row would go untrained)
            assert bool((enc > 0).all())
        else:
            assert float(enc.sum()) == 0


def test_ghost_loss_matches_the_reconstruction_loss_and_trains_only_dead_latents():
    x = low_rank(256, seed=3)
    trainer = killed_trainer("relu", 10)
    sae = trainer.sae
    err = (sae(x).x_hat - x).detach()
    total_var = (x - x.mean(0)).pow(2).sum()
    dead = torch.zeros(32, dtype=torch.bool)
    dead[KILLED] = True
    loss = ghost_grad_loss(sae, x, err, dead, total_var)
    # Each token's ghost loss is scaled to its reconstruction loss: the sum is the FVU.
    torch.testing.assert_close(loss, err.pow(2).sum() / total_var, rtol=1e-4, atol=0)
    loss.backward()
    grad_rows = sae.W_enc_SD.grad.norm(dim=-1)
    assert bool((grad_rows[KILLED] > 0).all()) and float(grad_rows[~dead].sum()) == 0


def test_resampling_sets_rows_as_described():
    x = low_rank(512, seed=4)
    trainer = killed_trainer("topk", 20)
    for rows in x.split(128):
        trainer.step(rows)
    sae, opt = trainer.sae, trainer.opt
    dead = torch.zeros(32, dtype=torch.bool)
    dead[KILLED] = True
    live_norm = sae.W_enc_SD[~dead].norm(dim=-1).mean()
    before = {p: opt.state[p]["exp_avg"].clone() for p in (sae.W_dec, sae.b_enc)}
    x_hat = x.clone()
    x_hat[500:] += 1.0  # only the last 12 rows are reconstructed, badly
    n = resample_dead(sae, opt, x, x_hat, dead, torch.Generator().manual_seed(0))
    assert n == len(KILLED)
    w = sae.W_dec.detach()
    torch.testing.assert_close(w[KILLED].norm(dim=-1), torch.ones(len(KILLED)))
    torch.testing.assert_close(sae.W_enc_SD[KILLED].norm(dim=-1),
                               torch.full((len(KILLED),), 0.2 * float(live_norm.detach())))
    assert float(sae.b_enc.detach()[KILLED].abs().sum()) == 0
    centred = (x - sae.b_dec)[500:]
    centred = centred / centred.norm(dim=-1, keepdim=True)
    assert bool(((w[KILLED] @ centred.T) > 1 - 1e-5).any(1).all())  # from the bad rows only
    for p, old in before.items():
        assert float(opt.state[p]["exp_avg"][KILLED].abs().sum()) == 0
        torch.testing.assert_close(opt.state[p]["exp_avg"][~dead], old[~dead])


def test_resample_draws_rows_by_squared_error():
    sq_err = torch.tensor([0.0, 1.0, 3.0, 0.0])
    rows = resample_inputs(sq_err, 4000, torch.Generator().manual_seed(0))
    counts = torch.bincount(rows, minlength=4)
    assert counts[0] == counts[3] == 0
    assert abs(float(counts[2]) / float(counts[1]) - 3) < 0.3


def test_data_parallel_refuses_the_new_options(lm):
    for kw in ({"architecture": "batchtopk"}, {"architecture": "relu", "ghost_grads": True},
               {"resample_every": 10}):
        with pytest.raises(ValueError, match="data-parallel training supports"):
            train_saes(lm, _windows(), HOOKS, _cfg(**kw), ranks=Ranks(rank=0, world=2))
