"""A step asks for every whole-batch number it uses (sae_core/train/whole.py): run on the
halves of a batch in lockstep, with each request answered from both halves (as two
data-parallel ranks would, without processes), it takes the one-process step on the whole."""

import copy

import pytest
import torch

from sae_core.config import SaeConfig, TrainConfig
from sae_core.metrics import total_variance
from sae_core.sae import Sae
from sae_core.train.trainer import SaeTrainer
from sae_core.train.whole import (
    AnyOf,
    Count,
    Sum,
    SumGrads,
    Variance,
    alone,
    one_pass_variance,
)


def _lockstep(steps: list) -> list:
    """Run the steps of simulated ranks together; each request is answered, on every rank,
    with the union of the ranks' parts. Returns each step's result."""
    requests = [next(s) for s in steps]
    results = [None] * len(steps)
    while True:
        kind = type(requests[0])
        assert all(type(r) is kind for r in requests), requests  # the ranks ask alike
        if kind is Sum:
            answer = sum(r.t for r in requests)
        elif kind is Count:
            answer = sum(r.n for r in requests)
        elif kind is AnyOf:
            answer = torch.stack([r.mask for r in requests]).any(0)
        elif kind is Variance:  # computed on the union of the rows, not from parts
            answer = total_variance(torch.cat([r.x for r in requests]))
        else:
            assert kind is SumGrads
            grads = [[p.grad for p in r.params] for r in requests]
            total = [sum(g) for g in zip(*grads, strict=True)]
            for rank_grads in grads:
                for g, t in zip(rank_grads, total, strict=True):
                    g.copy_(t)
            answer = None
        for i, s in enumerate(steps):
            try:
                requests[i] = s.send(answer)
            except StopIteration as done:
                results[i] = done.value
        if all(r is not None for r in results):
            return results


def _trainers(arch: str, n_ranks: int):
    torch.manual_seed(0)
    x = torch.randn(240, 16) * 2 + 0.5
    sae = Sae.init_from_data(SaeConfig(d_in=16, d_sae=64, k=4), x, seed=0)
    with torch.no_grad():
        sae.b_enc[:20] = -4.0  # planted: 20 latents rarely fire, so AuxK runs
    cfg = TrainConfig(architecture=arch, k=4, bf16=False, dead_tokens=30, lr=1e-3)
    make = lambda: SaeTrainer(copy.deepcopy(sae), cfg, total_steps=20)  # noqa: E731
    return x, make(), [make() for _ in range(n_ranks)]


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_steps_on_the_halves_of_each_batch_give_the_one_process_steps(arch):
    x, whole, ranks = _trainers(arch, 2)
    for i, batch in enumerate(x.split(60)):  # dead latents (and AuxK) after the first steps
        fvu = whole.step(batch)
        parts = batch.tensor_split(len(ranks))
        fvus = _lockstep([t.whole_step(p) for t, p in zip(ranks, parts, strict=True)])
        assert fvus[0] == fvus[1] == pytest.approx(fvu, rel=1e-5), i
    if arch == "topk":
        assert int((whole.since_fired > 30).sum()) >= 10  # AuxK ran on each step
    for t in ranks:
        assert t.n_tokens == whole.n_tokens and torch.equal(t.since_fired, whole.since_fired)
        for (name, p), q in zip(t.sae.named_parameters(), whole.sae.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=2e-5, msg=name)


def test_one_process_answers_from_its_own_rows():
    torch.manual_seed(1)
    x = torch.randn(50, 8, dtype=torch.float64) + 3
    t = torch.arange(4.0)

    def step():
        a = yield Variance(x)
        b = yield Variance(x, one_pass=False)
        c = yield Count(len(x), x.device)
        d = yield Sum(t)
        e = yield AnyOf(t > 1)
        f = yield SumGrads(())
        return a, b, c, d, e, f

    a, b, c, d, e, f = alone(step())
    torch.testing.assert_close(a, total_variance(x))
    assert torch.equal(b, total_variance(x)) and c == 50 and d is t and f is None
    assert e.tolist() == [False, False, True, True]
    assert torch.equal(one_pass_variance(x), a)
