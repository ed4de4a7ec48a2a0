"""CE loss recovered and KL: resuming from the clean residual stream and batching windows
equal recomputing every block for each window alone; the summary and the chosen windows."""

import itertools
import json
import math
import statistics

import pytest
import torch

from sae_core.activations import keep_mask
from sae_core.atlas.evaluate import (
    ce_losses,
    ce_per_window,
    ce_summary,
    evaluate_atlas,
    spread_windows,
)
from sae_core.config import SaeConfig
from sae_core.hooks import edit_output
from sae_core.lm import LM, find_layers
from sae_core.metrics import ce_loss_recovered, cross_entropy
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


def _direct_window(lm, ids_1L, h, sae, median):
    """One window alone, every block recomputed: clean, spliced and ablated loss and
    KL(clean || spliced) from torch's own kl_div."""
    with torch.inference_mode():
        clean_logits = lm.model(ids_1L, use_cache=False).logits
    spliced = _full_forward_loss(lm, ids_1L, h, sae, median, zero=False)
    ablated = _full_forward_loss(lm, ids_1L, h, sae, median, zero=True)

    def splice(act):
        keep = keep_mask(act, median, 10.0)
        new = act.clone()
        new[keep] = sae(act[keep].float()).x_hat
        return new

    with torch.inference_mode(), edit_output(lm, h, splice):
        spliced_logits = lm.model(ids_1L, use_cache=False).logits
    kl = torch.nn.functional.kl_div(
        spliced_logits[0, :-1].log_softmax(-1), clean_logits[0, :-1].log_softmax(-1),
        log_target=True, reduction="batchmean")
    return cross_entropy(clean_logits, ids_1L), spliced, ablated, float(kl)


@pytest.mark.parametrize("make_lm", [tiny_lm, tiny_gpt2], ids=["llama", "gpt2"])
def test_per_window_stats_equal_each_window_alone(make_lm):
    """Batched (2 windows a forward, the last batch short) and resumed, every window's
    numbers equal that window run alone through the whole model."""
    lm = make_lm()
    torch.manual_seed(1)
    ids = torch.randint(0, 16, (5, 12))
    hookpoints = ["layers.0", "layers.2", "layers.1.mlp"]
    saes = _saes(lm, hookpoints)
    medians = {h: 1.0 for h in hookpoints}
    got = ce_per_window(lm, saes, ids, medians, bf16=False, batch=2)
    for h, sae in saes.items():
        assert all(len(v) == 5 for v in got[h].values())
        for w in range(5):
            want = _direct_window(lm, ids[w:w + 1], h, sae, medians[h])
            have = [float(got[h][k][w]) for k in ("clean", "spliced", "ablated", "kl")]
            assert have == pytest.approx(list(want), rel=1e-4, abs=1e-6), (h, w)
        assert (got[h]["kl"] > 1e-4).all()  # the splice changes predictions
        assert got[h]["clean"].std() > 0  # the windows differ: per-window, not pooled


def test_summary_is_the_pooled_ratio_with_window_errors():
    per = {"clean": torch.tensor([2.0, 3.0, 2.5, 2.2]),
           "spliced": torch.tensor([2.5, 3.1, 3.0, 2.4]),
           "ablated": torch.tensor([9.0, 8.0, 10.0, 7.0]),
           "kl": torch.tensor([0.1, 0.3, 0.2, 0.2])}
    s = ce_summary(per)
    means = {k: float(v.mean()) for k, v in per.items()}
    assert s["ce_recovered"] == pytest.approx(
        ce_loss_recovered(means["clean"], means["spliced"], means["ablated"]))
    assert s["kl"] == pytest.approx(0.2)
    assert s["kl_se"] == pytest.approx(statistics.stdev([0.1, 0.3, 0.2, 0.2]) / 2)
    assert 0 < s["ce_recovered_se"] < 0.1 and s["ce_windows"] == 4


def test_ce_windows_span_the_held_out_set():
    for total, n in [(64, 32), (64, 64), (100, 32), (33, 32), (8, 32), (5, 2), (7, 1)]:
        pick = spread_windows(total, n).tolist()
        k = min(n, total)
        assert len(pick) == len(set(pick)) == k and pick == sorted(pick)
        assert pick[0] == 0 and (k == 1 or pick[-1] == total - 1)
        gaps = {b - a for a, b in itertools.pairwise(pick)}
        assert not gaps or max(gaps) - min(gaps) <= 1  # evenly spaced
    # The old evaluation took the first 4 windows, all in the first sixteenth of the sorted
    # held-out set; now each quarter of it holds 8 of the 32.
    quarters = torch.bincount(spread_windows(64, 32) // 16, minlength=4)
    assert quarters.tolist() == [8, 8, 8, 8]


def test_evaluate_atlas_measures_ce_on_the_spread_windows():
    lm = tiny_lm()
    torch.manual_seed(2)
    ids = torch.randint(0, 16, (8, 12))
    saes = _saes(lm, ["layers.1"])
    medians = {"layers.1": 1.0}
    got = evaluate_atlas(lm, saes, medians, ids, outlier_factor=10.0, ce_windows=3)["layers.1"]
    want = ce_losses(lm, saes, ids[[0, 4, 7]], medians)["layers.1"]
    assert got["ce_windows"] == 3
    for key in ("ce_clean", "ce_recovered", "ce_recovered_se", "kl", "kl_se"):
        assert got[key] == pytest.approx(want[key], rel=1e-5), key
    assert got["heldout_tokens"] > 0  # reconstruction still on all windows


def test_built_atlas_writes_errors(tiny_atlas):
    metrics = json.loads((tiny_atlas / "metrics.json").read_text())
    for m in metrics.values():
        assert m["ce_windows"] == 8  # the fixture holds out 8 windows: all of them
        assert math.isfinite(m["ce_recovered_se"]) and m["ce_recovered_se"] > 0
        assert m["kl"] > 0 and 0 < m["kl_se"] < m["kl"]


def _identity_sae(lm: LM, h: str, scale: float = 1.0) -> Sae:
    """A TopK SAE that reconstructs exactly (scale 1: x -> relu(x) - relu(-x) = x through
    2 d latents with k = d) or outputs 0 (scale 0: its decoder is zero)."""
    d = lm.d_model
    sae = Sae(SaeConfig(d_in=d, d_sae=2 * d, k=d, hookpoint=h))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc_SD.copy_(torch.cat([eye, -eye]))
        sae.W_dec.copy_(scale * torch.cat([eye, -eye]))
    return sae


def _filled_loss(lm, ids, h, median, fill):
    """The loss with the kept positions replaced by `fill`, every block recomputed."""
    def splice(act):
        keep = keep_mask(act, median, 10.0)
        new = act.clone()
        new[keep] = fill
        return new

    with torch.inference_mode(), edit_output(lm, h, splice):
        return cross_entropy(lm.model(ids, use_cache=False).logits, ids)


@pytest.mark.parametrize("h", ["layers.0", "layers.1"])  # the tiny MLP outputs barely matter
def test_ce_recovered_against_zero_and_mean_ablation(h):
    """A perfect SAE recovers 1 against both baselines; a zero SAE recovers 0 against zero
    ablation, and against mean ablation (mean - zero) / (mean - clean), computed here from
    whole-model forwards with the mean filled in."""
    lm = tiny_lm()
    torch.manual_seed(3)
    ids = torch.randint(0, 16, (4, 12))
    medians = {h: 1.0}
    with torch.inference_mode():
        from sae_core.hooks import run_captured
        acts = run_captured(lm, ids, [h], bf16=False)[h]
    keep = keep_mask(acts, 1.0, 10.0)
    mean = acts[keep].double().mean(0).float()
    perfect = ce_losses(lm, {h: _identity_sae(lm, h)}, ids, medians, bf16=False,
                        means={h: mean})[h]
    assert perfect["ce_recovered"] == pytest.approx(1.0, abs=1e-5)
    assert perfect["ce_recovered_mean"] == pytest.approx(1.0, abs=1e-5)
    zero = ce_losses(lm, {h: _identity_sae(lm, h, 0.0)}, ids, medians, bf16=False,
                     means={h: mean})[h]
    clean = cross_entropy(lm.model(ids, use_cache=False).logits, ids)
    zeroed = _filled_loss(lm, ids, h, 1.0, 0.0)
    meaned = _filled_loss(lm, ids, h, 1.0, mean)
    assert zero["ce_recovered"] == pytest.approx(0.0, abs=1e-6)
    assert zero["ce_mean_ablated"] == pytest.approx(meaned, rel=1e-5)
    assert zero["ce_recovered_mean"] == pytest.approx(
        ce_loss_recovered(clean, zeroed, meaned), abs=2e-4)  # fp32 losses, differenced
    assert abs(zero["ce_recovered_mean"]) > 1e-3  # its own value, not 0


def test_evaluation_records_the_tokens_it_leaves_out():
    lm = tiny_lm()
    torch.manual_seed(4)
    ids = torch.randint(0, 16, (6, 12))
    saes = _saes(lm, ["layers.1"])
    with torch.inference_mode():
        from sae_core.hooks import run_captured
        acts = run_captured(lm, ids, ["layers.1"], bf16=True)["layers.1"]
    norms = acts.float().norm(dim=-1)[:, 1:]
    medians = {"layers.1": float(norms.median()) / 10}  # about half the tokens "massive"
    got = evaluate_atlas(lm, saes, medians, ids, outlier_factor=10.0, ce_windows=2)["layers.1"]
    assert got["left_out_first"] == 6
    assert got["left_out_outliers"] == int((norms > 10 * medians["layers.1"]).sum()) > 20
    assert got["heldout_tokens"] + got["left_out_first"] + got["left_out_outliers"] == ids.numel()
    assert got["outlier_factor"] == 10.0
    assert math.isfinite(got["ce_recovered_mean"]) and "ce_mean_ablated" in got
