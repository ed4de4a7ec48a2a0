import pytest
import torch

from sae_core.train.shuffle import ShuffleBuffer


def test_every_row_is_trained_exactly_once_and_batches_mix():
    buf = ShuffleBuffer(capacity=40, d=2, seed=0)
    rows = torch.arange(100, dtype=torch.float32).repeat_interleave(2).view(100, 2)
    out = []
    for start in range(0, 100, 10):
        batch = buf.push(rows[start:start + 10])
        if batch is not None:
            assert len(batch) == 10
            out.append(batch)
    assert len(out) == 6  # the first 4 pushes only fill the buffer
    out += list(buf.drain(15))
    got = torch.cat(out)[:, 0].sort().values
    assert torch.equal(got, rows[:, 0])  # integers below 256 are exact in bf16
    assert len({int(v) // 10 for v in out[0][:, 0]}) > 1  # rows from several pushes


def test_state_round_trip_and_too_small_buffer():
    buf = ShuffleBuffer(capacity=8, d=1, seed=3)
    buf.push(torch.ones(4, 1))
    buf.push(torch.zeros(4, 1))
    other = ShuffleBuffer(capacity=8, d=1, seed=99)
    other.load_state(buf.state())
    x = torch.full((4, 1), 2.0)
    assert torch.equal(buf.push(x), other.push(x))
    with pytest.raises(ValueError, match="at least"):
        buf.push(torch.ones(5, 1))
