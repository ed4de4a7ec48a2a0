"""KL-controlled steering: every token's KL from the unsteered model is under the bound (checked
against full forwards without a cache), a loose bound is plain steering of the read position,
a tight one is the unsteered model, bad requests are messages and hooks never outlive a call."""

from types import SimpleNamespace

import pytest
import torch

from sae_core.config import SaeConfig
from sae_core.errors import BadInput
from sae_core.hooks import hooks_left, run_captured
from sae_core.sae import Sae
from sae_core.steer.edits import DirectionSteer, FeatureSteer, Steering, steering_hooks
from sae_core.steer.generation import GenConfig, generate
from sae_core.steer.kl_controlled import (
    FRACTIONS,
    generate_kl_controlled,
    kl_controlled_text,
)
from tests.conftest import tiny_lm
from tests.steer.common import PROMPT, _n_hooks

TOKEN, PLANTED = 5, 7  # "cat"; the SAE latent whose decoder row raises its logit


def _setup():
    """A tiny model with a sharpened unembedding (a random init predicts near-uniformly), an
    SAE at layers.0 and layers.1 with latent PLANTED set to `TOKEN`'s unembedding direction,
    the layers' median norms and the prompt's ids."""
    lm = tiny_lm(n_layers=2)
    lm.model.lm_head.weight.data *= 30
    g = torch.Generator().manual_seed(3)
    w_u = lm.model.get_output_embeddings().weight[TOKEN] * lm.model.model.norm.weight
    ids_P = torch.tensor(lm.tokenizer(PROMPT).input_ids)
    acts = run_captured(lm, ids_P[None], ["layers.0", "layers.1"], bf16=False)
    saes, norms = {}, {}
    for h in ("layers.0", "layers.1"):
        sae = Sae(SaeConfig(d_in=lm.d_model, d_sae=24, k=4, hookpoint=h))
        sae.W_dec.data.copy_(torch.randn(24, lm.d_model, generator=g))
        sae.W_dec.data[PLANTED] = w_u
        saes[h] = sae
        norms[h] = float(acts[h][0, 1:].norm(dim=-1).median())
        sae.metadata["median_norm"] = norms[h]
    return lm, saes, norms, ids_P


def _parts(strength: float):
    """The parts of the steerings tried, at `strength`: (hookpoint, latent or direction,
    strength, mode)."""
    v = torch.randn(32, generator=torch.Generator().manual_seed(1))
    return {
        "planted": [("layers.1", PLANTED, strength, "add")],
        "mixed": [("layers.0", v, strength, "add"), ("layers.1", PLANTED, strength, "clamp"),
                  ("layers.1", 3, -strength / 2, "add")],
    }


def _steering(parts, fraction: float = 1.0, positions: str = "all") -> Steering:
    return Steering(tuple(
        DirectionSteer(h, f, s * fraction) if isinstance(f, torch.Tensor)
        else FeatureSteer(h, f, s * fraction, mode) for h, f, s, mode in parts),
        positions=positions)


def _last_logp(lm, saes, norms, seq, rows):
    """Log-probabilities (over the tokens the text can hold) after `seq`, from one full forward
    without cache, each row's steering editing only the last position."""
    with torch.inference_mode(), steering_hooks(lm, saes, norms, rows, prompt_len=len(seq)):
        logits = lm.model(input_ids=seq[None].expand(len(rows), -1), use_cache=False).logits
    return logits[:, -1, : len(lm.tokenizer)].float().log_softmax(-1)


@pytest.mark.parametrize(("name", "strength", "max_kl", "temperature"), [
    ("planted", 0.5, 1.0, 0.0), ("planted", 1.0, 1.0, 0.0), ("planted", 1.0, 0.5, 1.0),
    ("mixed", 1.0, 0.5, 0.0)])
def test_every_token_is_within_the_bound_by_full_forwards(name, strength, max_kl,
                                                           temperature):
    lm, saes, norms, ids_P = _setup()
    parts = _parts(strength)[name]
    gen = GenConfig(max_new_tokens=12, temperature=temperature, seed=5, chat=False)
    out = generate_kl_controlled(lm, saes, norms, ids_P, _steering(parts), gen, max_kl=max_kl)
    assert len(out.tokens) == len(out.fractions) == len(out.kls) == 12
    assert all(k <= max_kl for k in out.kls)
    controlled = steered = 0
    for t, (tok, frac, kl) in enumerate(zip(out.tokens, out.fractions, out.kls, strict=True)):
        seq = torch.cat([ids_P, torch.tensor(out.tokens[:t], dtype=torch.long)])
        rows = [None, *(_steering(parts, f, "generated") for f in FRACTIONS)]
        logp = _last_logp(lm, saes, norms, seq, rows)
        kl_F = (logp[1:].exp() * (logp[1:] - logp[:1])).sum(-1)
        if frac == 0.0:
            assert kl == 0.0 and bool((kl_F > max_kl - 1e-4).all())
            chosen = 0
        else:
            i = FRACTIONS.index(frac)
            assert kl == pytest.approx(float(kl_F[i]), abs=1e-4)
            assert float(kl_F[i]) <= max_kl + 1e-4
            assert bool((kl_F[:i] > max_kl - 1e-4).all())  # larger fractions were too far
            chosen = i + 1
            steered += 1
        controlled += float(kl_F[0]) > max_kl  # the full steering would have gone past
        if temperature == 0:
            assert int(logp[chosen].argmax()) == tok
    assert controlled > 0 and steered > 0
    assert _n_hooks(lm) == 0 == hooks_left(lm)


def test_a_loose_bound_is_full_steering_of_the_read_position():
    lm, saes, norms, ids_P = _setup()
    parts = _parts(1.0)["mixed"]
    gen = GenConfig(max_new_tokens=10, chat=False)
    out = generate_kl_controlled(lm, saes, norms, ids_P, _steering(parts), gen, max_kl=1e6)
    assert out.fractions == (1.0,) * len(out.tokens) and min(out.kls) > 1e-3
    seq = ids_P
    for _ in range(gen.max_new_tokens):
        logp = _last_logp(lm, saes, norms, seq, [_steering(parts, 1.0, "generated")])
        nxt = int(logp[0].argmax())
        if nxt == lm.tokenizer.eos_token_id:
            break
        seq = torch.cat([seq, torch.tensor([nxt])])
    assert list(out.tokens) == seq[len(ids_P):].tolist()
    # the steering changes the text: the bound is not trivially met by the reference
    plain = generate(lm, saes, norms, ids_P, [None], gen)[0]
    assert list(out.tokens) != plain


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_tight_bound_is_the_unsteered_model(temperature):
    lm, saes, norms, ids_P = _setup()
    gen = GenConfig(max_new_tokens=12, temperature=temperature, seed=2, chat=False)
    steering = _steering(_parts(1.0)["mixed"])
    out = generate_kl_controlled(lm, saes, norms, ids_P, steering, gen, max_kl=1e-9)
    assert out.fractions == (0.0,) * len(out.tokens) and set(out.kls) <= {0.0}
    assert list(out.tokens) == generate(lm, saes, norms, ids_P, [None], gen)[0]
    assert list(out.tokens) != generate(lm, saes, norms, ids_P, [steering], gen)[0]


def test_the_text_helper_decodes_the_controlled_tokens():
    lm, saes, norms, ids_P = _setup()
    loaded = SimpleNamespace(lm=lm, saes=saes, corpus="default", outlier_factor=10.0)
    gen = GenConfig(max_new_tokens=8, chat=False)
    steering = _steering(_parts(0.5)["planted"])
    out = generate_kl_controlled(lm, saes, norms, ids_P, steering, gen, max_kl=1.0)
    text = kl_controlled_text(loaded, PROMPT, steering, gen, max_kl=1.0)
    assert text == lm.tokenizer.decode(list(out.tokens), skip_special_tokens=True) != ""


def test_bad_requests_are_clear_errors_and_no_hook_survives():
    lm, saes, norms, ids_P = _setup()
    gen, steering = GenConfig(max_new_tokens=4, chat=False), _steering(_parts(1.0)["mixed"])
    for max_kl in (0, 0.0, -1.0, float("nan"), float("inf"), "1", True, None):
        with pytest.raises(BadInput, match="max KL"):
            generate_kl_controlled(lm, saes, norms, ids_P, steering, gen, max_kl=max_kl)
    for fractions in ((), (1.0, 1.0), (0.5, 1.0), (1.0, 0.0), (1.5,), (1.0, float("nan")),
                      (-0.5,), "1", tuple(1 - i / 20 for i in range(9))):
        with pytest.raises(BadInput, match="fraction"):
            generate_kl_controlled(lm, saes, norms, ids_P, steering, gen, max_kl=1.0,
                                   fractions=fractions)
    with pytest.raises(BadInput, match="layer 1 is not in this SAE set"):
        generate_kl_controlled(lm, {"layers.0": saes["layers.0"]}, norms, ids_P, steering,
                               gen, max_kl=1.0)
    assert _n_hooks(lm) == 0 == hooks_left(lm)

    seen = []

    def boom(_module, args):  # a visitor leaves while a step is being read
        if args[0].shape[0] > 1:
            seen.append(_n_hooks(lm))
            raise RuntimeError("visitor closed the tab")

    handle = lm.model.model.norm.register_forward_pre_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="closed the tab"):
            generate_kl_controlled(lm, saes, norms, ids_P, steering, gen, max_kl=1.0)
    finally:
        handle.remove()
    assert seen == [2]  # the steering's two layers were hooked (pre-hooks are not counted)
    assert _n_hooks(lm) == 0 == hooks_left(lm)
