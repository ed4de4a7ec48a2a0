"""Side-by-side generation: batched rows equal solo runs, hooks never outlive a call, bad
requests are messages."""

import pytest
import torch

from sae_core.norms import typical_norms
from sae_core.steer.edits import (
    FeatureSteer,
    Steering,
)
from sae_core.steer.generation import GenConfig, generate, prompt_ids, side_by_side
from tests.steer.common import PROMPT, _n_hooks
from ui.serving import session


def test_strength_zero_gives_the_unsteered_output(tiny_atlas):
    loaded = session.open_atlas(tiny_atlas)
    for temperature in (0.0, 1.0):
        gen = GenConfig(max_new_tokens=12, temperature=temperature, seed=3)
        out = side_by_side(loaded, PROMPT, Steering((FeatureSteer("layers.1", 5, 0.0),)), gen)
        assert out.steered == out.unsteered and out.n_tokens[0] == out.n_tokens[1]


def test_batched_rows_equal_solo_runs_and_steering_changes_the_text(tiny_atlas):
    loaded = session.open_atlas(tiny_atlas)
    ids = prompt_ids(loaded.lm, PROMPT, GenConfig())
    norms, _ = typical_norms(loaded.lm, loaded.saes, ["layers.1", "layers.2"])
    steer = Steering((FeatureSteer("layers.1", 5, 8.0), FeatureSteer("layers.2", 9, 6.0)))
    for gen in (GenConfig(max_new_tokens=16), GenConfig(max_new_tokens=16, temperature=1.0)):
        batch = generate(loaded.lm, loaded.saes, norms, ids, [None, steer], gen)
        plain = generate(loaded.lm, loaded.saes, norms, ids, [None], gen)[0]
        alone = generate(loaded.lm, loaded.saes, norms, ids, [steer], gen)[0]
        assert batch == [plain, alone]
        assert batch[0] != batch[1]
    assert _n_hooks(loaded.lm) == 0


def test_no_hook_survives_an_exception(tiny_atlas):
    loaded = session.open_atlas(tiny_atlas)
    ids = prompt_ids(loaded.lm, PROMPT, GenConfig())
    norms, _ = typical_norms(loaded.lm, loaded.saes, ["layers.0", "layers.2"])
    steer = Steering((FeatureSteer("layers.0", 1, 1.0), FeatureSteer("layers.2", 2, 1.0, "clamp")))
    before = _n_hooks(loaded.lm)

    def boom(_logits):
        assert _n_hooks(loaded.lm) == before + 2  # the hooks were in place
        raise RuntimeError("visitor closed the tab")

    with pytest.raises(RuntimeError, match="closed the tab"):
        generate(loaded.lm, loaded.saes, norms, ids, [None, steer], GenConfig(), on_step=boom)
    assert _n_hooks(loaded.lm) == before == 0


def test_bad_requests_are_clear_errors(tiny_atlas):
    loaded = session.open_atlas(tiny_atlas)
    ok = Steering((FeatureSteer("layers.1", 5, 0.5),))
    cases = [
        ("   ", ok, GenConfig(), "prompt"),
        (PROMPT, Steering((FeatureSteer("layers.1", 64, 0.5),)), GenConfig(), "feature 64"),
        (PROMPT, Steering((FeatureSteer("layers.7", 1, 0.5),)), GenConfig(), "layer 7"),
        (" ".join(["cat"] * 120), ok, GenConfig(max_new_tokens=20), "prompt is"),
    ]
    for prompt, steering, gen, match in cases:
        with pytest.raises(ValueError, match=match):
            side_by_side(loaded, prompt, steering, gen)
    with pytest.raises(ValueError, match="max new tokens"):
        GenConfig(max_new_tokens=10_000)
    with pytest.raises(ValueError, match="at least one feature"):
        Steering(())
    assert _n_hooks(loaded.lm) == 0


def test_few_rows_linear_matches_and_stays_in_its_thread():
    import threading

    import torch.nn.functional as F

    from sae_core.steer.generation import _FewRowsLinear

    threads = []

    class Counting(_FewRowsLinear):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is F.linear:
                threads.append(threading.get_ident())
            return super().__torch_function__(func, types, args, kwargs)

    w, b = torch.randn(48, 32), torch.randn(48)
    x = torch.randn(2, 1, 32)
    with Counting():
        y = F.linear(x, w, b)
        t = threading.Thread(target=F.linear, args=(x, w, b))  # another visitor's forward
        t.start()
        t.join()
    torch.testing.assert_close(y, x @ w.T + b)
    assert threads == [threading.get_ident()]
