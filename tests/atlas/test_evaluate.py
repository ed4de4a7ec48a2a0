"""CE loss recovered: resuming from the clean residual stream equals recomputing every block."""

import pytest
import torch

from sae_core.activations import keep_mask
from sae_core.atlas.evaluate import ce_losses
from sae_core.config import SaeConfig
from sae_core.hooks import edit_output
from sae_core.lm import LM, find_layers
from sae_core.metrics import cross_entropy
from sae_core.sae import Sae
from tests.conftest import tiny_lm, tiny_tokenizer


def tiny_gpt2() -> LM:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=32, n_head=4, vocab_size=64))
    model = model.eval().requires_grad_(False)
    return LM(model=model, tokenizer=tiny_tokenizer(), name="tiny-gpt2", layers=find_layers(model))


def _saes(lm: LM, hookpoints: list[str]) -> dict[str, Sae]:
    x = torch.randn(64, lm.d_model)
    return {h: Sae.init_from_data(SaeConfig(d_in=lm.d_model, d_sae=64, k=4, hookpoint=h), x,
                                  seed=i) for i, h in enumerate(hookpoints)}


def _full_forward_loss(lm, ids, h, sae, median, zero):
    def splice(act):
        keep = keep_mask(act, median, 10.0)
        new = act.clone()
        new[keep] = 0 if zero else sae(act[keep].float()).x_hat.to(act.dtype)
        return new

    with torch.inference_mode(), edit_output(lm, h, splice):
        return cross_entropy(lm.model(ids, use_cache=False).logits, ids)


@pytest.mark.parametrize("make_lm", [tiny_lm, tiny_gpt2], ids=["llama", "gpt2"])
def test_resumed_ce_equals_full_forward(make_lm):
    lm = make_lm()
    ids = torch.randint(0, 16, (3, 12))
    hookpoints = ["layers.0", "layers.1", "layers.2", "layers.1.mlp"]
    saes = _saes(lm, hookpoints)
    medians = {h: 1.0 for h in hookpoints}  # a low median: some tokens count as massive
    got = ce_losses(lm, saes, ids, medians, bf16=False)
    for h, sae in saes.items():
        spliced = _full_forward_loss(lm, ids, h, sae, medians[h], zero=False)
        ablated = _full_forward_loss(lm, ids, h, sae, medians[h], zero=True)
        assert got[h]["ce_spliced"] == pytest.approx(spliced, rel=1e-5)
        assert got[h]["ce_ablated"] == pytest.approx(ablated, rel=1e-5)
        assert got[h]["ce_spliced"] != pytest.approx(got[h]["ce_clean"], rel=1e-4)
    assert all(block.__dict__.get("forward") is None for block in lm.layers)
