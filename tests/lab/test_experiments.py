"""Lab sweeps and comparisons: every SAE on the same rows, scored the same way; a layer's rows
are the ones a build trains on; the folder a run writes holds what it measured."""

import json

import pytest
import torch

from sae_core.activations import keep_mask
from sae_core.config import TrainConfig
from sae_core.corpus import load_texts, split_ids, token_windows
from sae_core.hooks import run_captured
from sae_core.lab.data import LabData, layer_data
from sae_core.lab.experiments import RECIPES, compare, recipe_config, sweep
from sae_core.lab.run import LabConfig, run_lab
from sae_core.lab.table import table_markdown
from sae_core.sae import Sae
from tests.tiny import tiny_lm
from ui.saes.lab_figures import draw_run, frontier_figure

BASE = TrainConfig(expansion=2, k=4, batch_tokens=256, bf16=False, dead_tokens=2_000)


def planted(n: int, d: int = 16, n_features: int = 32, active: int = 3, seed: int = 0):
    """Rows made of `active` random unit features each, with positive magnitudes."""
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(n_features, d, generator=gen)
    feats /= feats.norm(dim=-1, keepdim=True)
    idx = torch.rand(n, n_features, generator=gen).topk(active, dim=-1).indices
    mags = torch.rand(n, active, generator=gen) + 0.5
    return torch.einsum("na,nad->nd", mags, feats[idx]), feats


@pytest.fixture(scope="module")
def data() -> LabData:
    train, feats = planted(6_144)
    test, _ = planted(1_024, seed=1)
    return LabData(name="planted", train_ND=train, test_ND=test, true_FD=feats)


def test_a_k_sweep_trades_sparsity_for_reconstruction(data):
    rows = sweep(data, BASE, "k", [1, 4, 16])
    assert [r["value"] for r in rows] == [1, 4, 16]
    for r in rows:  # a TopK SAE never has more than k active latents
        assert 0 < r["l0"] <= r["value"] + 1e-6 and r["seconds"] > 0 and r["steps"] >= 20
    fvus = [r["fvu"] for r in rows]
    assert fvus[0] > fvus[1] > fvus[2]  # more latents per token: less left unexplained
    assert all(0 <= r["mmcs"] <= 1 for r in rows)  # the planted dictionary is scored


def test_sweeps_refuse_what_they_cannot_mean(data):
    with pytest.raises(ValueError, match="does nothing to a TopK"):
        sweep(data, BASE, "l1_coeff", [0.1])
    with pytest.raises(ValueError, match="changes one of"):
        sweep(data, BASE, "lr", [0.1])
    with pytest.raises(ValueError, match="unknown recipe"):
        recipe_config("Gated", BASE, 1_000)


def test_recipes_differ_in_what_they_name_and_nothing_else():
    for name in RECIPES:
        cfg = recipe_config(name, BASE, 6_144)
        assert (cfg.expansion, cfg.k, cfg.batch_tokens, cfg.lr) == (2, 4, 256, BASE.lr)
    assert recipe_config("TopK", BASE, 6_144).auxk_alpha == 0
    assert recipe_config("TopK + AuxK", BASE, 6_144).auxk_alpha == BASE.auxk_alpha
    assert recipe_config("TopK + k schedule", BASE, 6_144).k_start == 16
    assert recipe_config("ReLU + L1 + ghost grads", BASE, 6_144).ghost_grads
    assert recipe_config("ReLU + L1 + resampling", BASE, 6_144).resample_every == 24 // 5
    assert recipe_config("Matryoshka BatchTopK", BASE, 6_144).architecture == "matryoshka"


def test_a_comparison_trains_every_recipe_on_the_same_rows(data):
    rows = compare(data, BASE)
    assert [r["label"] for r in rows] == list(RECIPES)
    for r in rows:
        assert 0 <= r["fvu"] < 1 and r["l0"] > 0 and 0 <= r["dead"] <= 1, r
    topk = {r["label"]: r["l0"] for r in rows if r["architecture"] != "relu"}
    assert all(l0 <= 4 * 1.1 for l0 in topk.values())  # k 4 at inference, batch-level ±10%


def test_layer_rows_are_the_positions_a_build_trains_on(tmp_path, corpus_file):
    lm = tiny_lm()
    got = layer_data(lm, "layers.1.mlp", tokens=16 * 20, test_windows=4, seq_len=16,
                     corpus=str(corpus_file), bf16=False)
    windows = token_windows(lm.tokenizer, load_texts(str(corpus_file)), 16)
    _, test_ids = split_ids(len(windows), 4, 0)
    acts = run_captured(lm, windows[test_ids], ["layers.1.mlp"], bf16=False)["layers.1.mlp"]
    expected = acts[keep_mask(acts, got.median_norm)]
    assert torch.equal(got.test_ND, expected)  # same rows, same order as a build keeps
    assert len(got.train_ND) <= 20 * 15 and got.heldout_WL.shape == (4, 16)


def test_a_layer_run_writes_its_numbers_table_and_figure(tmp_path, corpus_file):
    lab = LabConfig(layer=2, corpus=str(corpus_file), seq_len=16, tokens=2_048, param="k",
                    values=(2.0, 8.0))
    out = run_lab("sweep", lab, BASE, out=tmp_path / "run", lm=tiny_lm())
    res = json.loads((out / "results.json").read_text())
    assert res["hookpoint"] == "layers.2" and res["model"] == "tiny-llama"
    assert [r["value"] for r in res["rows"]] == [2, 8]
    for r in res["rows"]:  # spliced into held-out windows: CE loss recovered and KL measured
        assert r["ce_recovered"] == r["ce_recovered"] and r["kl"] >= 0
    table = (out / "table.md").read_text()
    assert table.count("\n| k=") == 2 and "CE loss recovered" in table
    assert [p.name for p in draw_run(out, png=False)] == ["frontier.html"]
    assert "plotly" in (out / "frontier.html").read_text()[:100_000].lower()


def test_table_and_figure_show_exactly_the_rows():
    rows = [{"label": "a", "l0": 3.0, "fvu": 0.5, "mmcs": 0.9},
            {"label": "b", "l0": 9.0, "fvu": 0.2, "mmcs": 0.95}]
    table = table_markdown(rows)
    assert "MMCS" in table and "CE loss" not in table and table.count("\n") == 4
    fig = frontier_figure(rows, "t", kind="sweep")  # the app's and the script's figure
    assert [list(t.x) for t in fig.data] == [[3.0, 9.0]] * 2
    assert [list(t.y) for t in fig.data] == [[0.5, 0.2], [0.9, 0.95]]
    fig = frontier_figure(rows, "t", kind="recipes")  # one trace and legend entry per row
    assert [(t.name, list(t.x), list(t.y)) for t in fig.data] == [
        ("a", [3.0], [0.5]), ("b", [9.0], [0.2]), ("a", [3.0], [0.9]), ("b", [9.0], [0.95])]
    assert [t.showlegend for t in fig.data] == [True, True, False, False]


def test_final_saes_of_every_recipe_load_as_saved(tmp_path, data):
    """What a comparison scores is what a user would save and load (SAELens layout)."""
    from sae_core.lab.fit import fit_sae

    for name in ("BatchTopK", "ReLU + L1 + ghost grads"):
        sae = fit_sae(data.train_ND, recipe_config(name, BASE, 6_144)).sae
        sae.save(tmp_path / name)
        back = Sae.load(tmp_path / name)
        assert torch.allclose(back(data.test_ND).x_hat, sae(data.test_ND).x_hat, atol=1e-6)
