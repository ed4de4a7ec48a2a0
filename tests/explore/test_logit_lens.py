"""The logit lens on hand-set weights."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from sae_core.explore.logit_lens import direction_logits, logit_lens
from sae_core.lm import LM, find_layers
from tests.conftest import tiny_lm, tiny_tokenizer


def test_logit_lens_on_hand_set_weights():
    lm = tiny_lm()
    with torch.no_grad():
        lm.model.model.norm.weight.fill_(1.0)
        lm.model.model.norm.weight[3] = -2.0
        w_u = lm.model.get_output_embeddings().weight
        w_u.zero_()
        w_u[10, 3], w_u[11, 3], w_u[12, 3] = 1.0, 3.0, -5.0
        w_u[20, 4] = 9.0
    e3 = torch.zeros(32)
    e3[3] = 1.0
    lens = logit_lens(lm, e3, k=2)
    # The gain -2 flips dimension 3: token 12 (-5 * -2) is promoted most, 11 suppressed most.
    assert lens.top_ids.tolist() == [12, 10] or lens.top_ids.tolist()[0] == 12
    assert lens.bottom_ids.tolist() == [11, 10]
    # rms of a unit vector in 32 dims is 1/sqrt(32): scores are W_U (gain * d) * sqrt(32).
    assert lens.top_vals[0] == pytest.approx(10 * 32 ** 0.5, rel=1e-4)
    assert lens.bottom_vals[0] == pytest.approx(-6 * 32 ** 0.5, rel=1e-4)


def test_logit_lens_ignores_layernorm_bias():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=40)).eval()
    lm = LM(model, tiny_tokenizer(), "tiny-gpt2", find_layers(model))
    d = torch.randn(2, 16)
    before = direction_logits(lm, d)
    with torch.no_grad():
        model.transformer.ln_f.bias.normal_(0, 5)
    after = direction_logits(lm, d)
    assert torch.allclose(before, after, atol=1e-4)
    centred = (d - d.mean(1, keepdim=True)) / d.std(1, unbiased=False, keepdim=True)
    expected = (centred * model.transformer.ln_f.weight) @ model.lm_head.weight.T
    assert torch.allclose(after, expected, atol=1e-3)
