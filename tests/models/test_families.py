"""Hooks, generation, steering and the resumed forward on every family the SAE suites were
made for (llama, gemma2, gemma3, qwen2, qwen3, gpt2, gpt-neox), each checked against values
the Hugging Face model computes another way: `output_hidden_states`, the residual sum of a
block, its own pre-MLP norm, `generate` and a plain forward."""

import pytest
import torch

from sae_core.config import SaeConfig
from sae_core.explore.logit_lens import final_norm
from sae_core.hooks import hooks_left, output_tensor, record_blocks, resume_after, run_captured
from sae_core.sae import Sae
from sae_core.steer.edits import FeatureSteer, Steering
from sae_core.steer.generation import GenConfig, generate, prompt_ids
from tests.models.families import FAMILIES, N_LAYERS, SLIDING, family_lm

NAMES = list(FAMILIES)
ATOL = 1e-5


@pytest.fixture(scope="module", params=NAMES)
def fam(request):
    return request.param, family_lm(request.param)


def _ids(n: int = 3 * SLIDING, batch: int = 2) -> torch.Tensor:
    return torch.randint(3, 16, (batch, n), generator=torch.Generator().manual_seed(1))


def _hidden(lm, ids):
    with torch.inference_mode():
        return lm.model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states


def test_capture_matches_hidden_states_and_the_residual_sum(fam):
    """layers.N is hidden_states[N + 1] (the last one through the final norm, which HF applies
    to its last entry); attention plus MLP output is what the block adds to the stream."""
    _, lm = fam
    ids, hs = _ids(), None
    hs = _hidden(lm, ids)
    assert len(hs) == N_LAYERS + 1
    hookpoints = [f"layers.{i}{s}" for i in range(N_LAYERS) for s in ("", ".mlp", ".attn")]
    acts = run_captured(lm, ids, hookpoints, bf16=False)
    assert set(acts) == set(hookpoints) and hooks_left(lm) == 0
    resid = [hs[0], *(acts[f"layers.{i}"] for i in range(N_LAYERS))]
    for i in range(N_LAYERS - 1):
        torch.testing.assert_close(acts[f"layers.{i}"], hs[i + 1], atol=ATOL, rtol=0)
    last = final_norm(lm)(acts[f"layers.{N_LAYERS - 1}"])
    torch.testing.assert_close(last, hs[-1], atol=ATOL, rtol=0)
    for i in range(N_LAYERS):
        added = acts[f"layers.{i}.attn"] + acts[f"layers.{i}.mlp"]
        torch.testing.assert_close(added, resid[i + 1] - resid[i], atol=ATOL, rtol=0)


def test_mlp_input_is_the_pre_mlp_norm_output(fam):
    """`layers.N.mlp_in` names the module whose input a transcoder reads: the MLP, which reads
    the block's pre-MLP norm of the residual stream (after attention, or before it in a
    parallel block)."""
    name, lm = fam
    ids = _ids()
    acts = run_captured(lm, ids, [f"layers.{i}{s}" for i in range(N_LAYERS)
                                  for s in ("", ".attn")], bf16=False)
    seen = {}
    handles = [lm.module_for(f"layers.{i}.mlp_in").register_forward_pre_hook(
        lambda _m, args, i=i: seen.__setitem__(i, args[0])) for i in range(N_LAYERS)]
    try:
        with torch.inference_mode():
            lm.model(input_ids=ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    embed = _hidden(lm, ids)[0]
    for i in range(N_LAYERS):
        before = acts[f"layers.{i - 1}"] if i else embed
        mid = before if FAMILIES[name].parallel else before + acts[f"layers.{i}.attn"]
        norm = getattr(lm.layers[i], FAMILIES[name].pre_mlp_norm)
        torch.testing.assert_close(seen[i], norm(mid), atol=ATOL, rtol=0)


def _saes(lm, hookpoints):
    """Random SAEs (unit decoder rows) at `hookpoints`."""
    sample = torch.randn(8, lm.d_model, generator=torch.Generator().manual_seed(0))
    return {h: Sae.init_from_data(SaeConfig(d_in=lm.d_model, d_sae=64, k=4, hookpoint=h),
                                  sample, seed=i) for i, h in enumerate(hookpoints)}


def test_steered_generation_changes_only_the_steered_row(fam):
    """Rows 0 and 2 are unsteered: the text HF's greedy `generate` writes; row 1 is steered at
    a residual and an MLP hookpoint and differs; no hook is left behind."""
    _, lm = fam
    saes = _saes(lm, ["layers.1", "layers.0.mlp"])
    norms = dict.fromkeys(saes, 4.0)
    gen = GenConfig(max_new_tokens=10)
    ids = prompt_ids(lm, "the cat sat on the mat . a dog ran", gen)
    steer = Steering((FeatureSteer("layers.1", 3, 6.0), FeatureSteer("layers.0.mlp", 5, 6.0)))
    finite = []
    rows = generate(lm, saes, norms, ids, [None, steer, None], gen,
                    on_step=lambda logits: finite.append(bool(logits.isfinite().all())))
    assert all(finite) and hooks_left(lm) == 0
    with torch.inference_mode():
        out = lm.model.generate(ids[None], max_new_tokens=10, do_sample=False)[0, len(ids):]
    hf = out.tolist()
    hf = hf[:hf.index(2)] if 2 in hf else hf  # cut at EOS, as generate() does
    assert rows[0] == rows[2] == hf
    assert rows[1] != rows[0]
    plain = generate(lm, saes, norms, ids, [None], gen)[0]
    alone = generate(lm, saes, norms, ids, [steer], gen)[0]
    assert [plain, alone] == rows[:2]  # each row as it is alone: no row leaks into another


def test_resume_gives_the_plain_logits(fam):
    """The forward resumed from a recorded block output (steer/effect.py) gives the logits of
    a plain forward, at every layer it may resume after, for a batch of rows."""
    _, lm = fam
    ids = _ids(batch=1)
    with record_blocks(lm) as blocks, torch.inference_mode():
        plain = lm.model(input_ids=ids, use_cache=False).logits
    for layer in range(N_LAYERS - 1):
        resid = blocks[layer]
        rows = output_tensor(resid).expand(3, -1, -1)
        with resume_after(lm, layer, resid, rows), torch.inference_mode():
            resumed = lm.model(input_ids=ids.expand(3, -1), use_cache=False).logits
        torch.testing.assert_close(resumed, plain.expand(3, -1, -1), atol=ATOL, rtol=0)
    assert hooks_left(lm) == 0


def test_pushed_effect_of_zero_strength_is_nothing(fam):
    """The effect finder's resumed, steered forward with strength 0 leaves the next-token
    distribution as it was (KL 0, concept probability unchanged)."""
    from sae_core.steer.effect import make_probe, pushed_effects

    _, lm = fam
    saes = _saes(lm, ["layers.1", "layers.2.mlp"])
    probe = make_probe(lm, answer_tokens=4)
    rows = [Steering((FeatureSteer(h, 3, 0.0),)) for h in saes]
    concept = torch.tensor([5, 6])  # cpu: token ids, as concept_tokens gives them
    p0, effects = pushed_effects(lm, saes, dict.fromkeys(saes, 4.0), probe, rows, concept)
    for e in effects:
        assert e.kl == pytest.approx(0, abs=1e-6) and e.concept_prob == pytest.approx(p0)
    assert hooks_left(lm) == 0
