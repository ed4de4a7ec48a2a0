import threading

import pytest
import torch

from sae_core.hooks import (
    capture,
    edit_output,
    hooks_left,
    output_tensor,
    record_blocks,
    resume_after,
    run_captured,
)


def test_capture_matches_hidden_states(lm):
    ids = torch.randint(0, 64, (2, 10))
    hidden = lm.model(ids, output_hidden_states=True).hidden_states
    acts = run_captured(lm, ids, ["layers.0", "layers.2"], bf16=False)
    torch.testing.assert_close(acts["layers.0"], hidden[1])  # module output = hidden_states[N+1]
    assert acts["layers.2"].shape == (2, 10, 32)


def test_capture_mlp_output(lm):
    ids = torch.randint(0, 64, (1, 6))
    seen = {}
    handle = lm.layers[1].mlp.register_forward_hook(lambda m, i, o: seen.setdefault("mlp", o))
    try:
        acts = run_captured(lm, ids, ["layers.1.mlp"], bf16=False)
    finally:
        handle.remove()
    torch.testing.assert_close(acts["layers.1.mlp"], seen["mlp"])


def test_forward_stops_after_last_needed_block(lm):
    ids = torch.randint(0, 64, (1, 6))
    calls = []
    handle = lm.layers[2].register_forward_hook(lambda *a: calls.append(1))
    try:
        run_captured(lm, ids, ["layers.0"], bf16=False)
    finally:
        handle.remove()
    assert calls == []  # block 2 never ran


def _n_hooks(lm):
    return sum(len(m._forward_hooks) for m in lm.model.modules())


def test_hooks_removed_on_exception(lm):
    before = _n_hooks(lm)
    with pytest.raises(RuntimeError, match="boom"), capture(lm, ["layers.0", "layers.1.mlp"]):
        assert _n_hooks(lm) == before + 2
        raise RuntimeError("boom")
    assert _n_hooks(lm) == before


def test_bad_hookpoints_are_clear_errors(lm):
    with pytest.raises(ValueError, match="out of range"):
        run_captured(lm, torch.zeros(1, 3, dtype=torch.long), ["layers.7"])
    with pytest.raises(ValueError, match="unknown hookpoint"):
        run_captured(lm, torch.zeros(1, 3, dtype=torch.long), ["resid_7"])
    assert _n_hooks(lm) == 0


def beside_another_visitor(lm, ids, edit):
    """(logits in this thread inside `edit`, logits of a plain forward that another thread
    runs while `edit` is active)."""
    inside, outside = threading.Event(), threading.Event()
    result = {}

    def other_visitor():
        inside.wait()
        with torch.inference_mode():
            result["logits"] = lm.model(ids).logits
        outside.set()

    worker = threading.Thread(target=other_visitor)
    worker.start()
    with torch.inference_mode(), edit:
        inside.set()
        outside.wait(timeout=30)
        edited = lm.model(ids).logits
    worker.join()
    return edited, result["logits"]


def test_hooks_act_only_in_their_own_thread(lm):
    """A visitor's edit in one thread leaves a concurrent forward in another thread alone."""
    ids = torch.randint(0, 64, (1, 6))
    clean = lm.model(ids).logits
    edited, other = beside_another_visitor(lm, ids, edit_output(lm, "layers.1", lambda x: x + 100))
    torch.testing.assert_close(other, clean)
    assert not torch.allclose(edited, clean)


def test_resume_skips_blocks_only_in_its_own_thread(lm):
    ids = torch.randint(0, 16, (1, 6))
    with torch.inference_mode(), record_blocks(lm) as blocks:
        clean = lm.model(ids).logits
    shifted = output_tensor(blocks[1]) + 5.0
    edited, other = beside_another_visitor(lm, ids, resume_after(lm, 1, blocks[1], shifted))
    torch.testing.assert_close(other, clean)
    assert not torch.allclose(edited, clean)
    with torch.inference_mode():
        torch.testing.assert_close(lm.model(ids).logits, clean)  # blocks restored


def test_hooks_left_counts_ours_not_transformers(lm):
    """hooks_left counts each live capture hook, edit and resumed block, drops to 0 when
    they leave, and ignores the output-capturing hooks transformers keeps on the model."""
    ids = torch.randint(0, 16, (1, 6))
    with torch.inference_mode():
        lm.model(ids, output_hidden_states=True)  # transformers installs its own hooks here
    assert _n_hooks(lm) > 0 and hooks_left(lm) == 0
    with capture(lm, ["layers.0", "layers.2", "layers.1.mlp"]):
        assert hooks_left(lm) == 3
        with edit_output(lm, "layers.1", lambda x: x):
            assert hooks_left(lm) == 4
    with record_blocks(lm) as blocks, torch.inference_mode():
        assert hooks_left(lm) == lm.n_layers
        lm.model(ids)
    with resume_after(lm, 1, blocks[1], output_tensor(blocks[1])):
        assert hooks_left(lm) == 2  # blocks 0 and 1 run a replaced forward
    with pytest.raises(RuntimeError, match="boom"), edit_output(lm, "layers.0", lambda x: x):
        raise RuntimeError("boom")
    assert hooks_left(lm) == 0
    leak = edit_output(lm, "layers.2", lambda x: x)  # planted: entered, never left
    leak.__enter__()
    assert hooks_left(lm) == 1
    leak.__exit__(None, None, None)
    assert hooks_left(lm) == 0
