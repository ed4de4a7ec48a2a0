"""The SAEs tab's lab: the active set on the L0 vs FVU plane, the runs on its model, and a
small sweep from the app (outside public mode)."""

import json

import gradio as gr
import pytest

from sae_core.atlas.layout import read_metrics
from ui.saes import lab_panel


def test_the_set_frontier_has_one_point_per_sae(tiny_atlas):
    fig = lab_panel.set_frontier(str(tiny_atlas))
    metrics = read_metrics(tiny_atlas)
    assert list(fig.data[0].x) == [m["l0"] for m in metrics.values()]
    assert list(fig.data[0].y) == [m["fvu"] for m in metrics.values()]
    assert list(fig.data[1].y) == [m["ce_recovered"] for m in metrics.values()]
    assert lab_panel.set_frontier(None) is None


@pytest.mark.parametrize(("text", "param", "message"), [
    ("", "k", "give 1 to 6"), ("8,x", "k", "must be numbers"), ("2.5", "k", "whole"),
    ("0", "k", "from 1 to 512"), ("1,2,3,4,5,6,7", "k", "give 1 to 6"),
    ("nan", "l1_coeff", "from 0.0001"), ("8", "lr", "sweep one of"), ("9" * 200, "k", "100")])
def test_sweep_values_are_checked(text, param, message):
    with pytest.raises(gr.Error, match=message):
        lab_panel.parse_values(text, param)


def test_sweep_values_parse_sorted_and_unique():
    assert lab_panel.parse_values("32, 8,8 16", "k") == (8, 16, 32)
    assert lab_panel.parse_values("0.5,0.05", "l1_coeff") == (0.05, 0.5)


def test_a_sweep_from_the_app_lands_in_the_runs_of_its_model(tiny_atlas, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # checkpoints/lab lands here
    monkeypatch.setattr(lab_panel, "SWEEP_TOKENS", 2_048)
    fig, table, runs, status = lab_panel.run_sweep(str(tiny_atlas), "1 ", "k", "2,4")
    assert "checkpoints/lab" in status and table.count("\n| k=") == 2
    saved = lab_panel.lab_runs(str(tiny_atlas))
    (result,) = saved.values()
    assert runs.value in saved
    assert list(fig.data[0].x) == [row["l0"] for row in result["rows"]]
    assert result["hookpoint"] == "layers.1" and result["model"] == "tiny-llama"
    # a run on another model and an unreadable one are not shown
    other = tmp_path / "checkpoints/lab/other"
    other.mkdir()
    (other / "results.json").write_text(json.dumps(result | {"model": "gpt2"}))
    broken = tmp_path / "checkpoints/lab/broken"
    broken.mkdir()
    (broken / "results.json").write_text("{not json")
    assert list(lab_panel.lab_runs(str(tiny_atlas))) == list(saved)


def test_a_sweep_needs_a_set_and_a_layer_of_it(tiny_atlas):
    assert lab_panel.run_sweep(None, "1", "k", "2") == gr.skip()  # an info, no error
    with pytest.raises(gr.Error, match=r"not in this SAE set|is not a layer"):
        lab_panel.run_sweep(str(tiny_atlas), "7", "k", "2")


def test_the_train_form_and_the_sweep_ask_within_one_table():
    """Both forms read their bounds from config.TRAIN_FORM_LIMITS and the train form its
    defaults from TrainConfig: the largest width the train form takes, the sweep takes."""
    from sae_core.config import TRAIN_FORM_LIMITS, TrainConfig
    from ui.saes import train_panel

    with gr.Blocks():
        train_panel.build_train_panel(gr.Timer(active=False))
        boxes = {b.label: b for b in gr.context.get_blocks_context().blocks.values()
                 if isinstance(b, gr.Number)}
    for field, words in train_panel.FIELDS.items():
        box = next(b for label, b in boxes.items() if label.lower().startswith(words[:5]))
        limit = TRAIN_FORM_LIMITS[field]
        assert (box.value, box.minimum, box.maximum) == (
            getattr(TrainConfig(), field), limit.lo, limit.hi)
    for field in ("expansion", "k"):
        hi = TRAIN_FORM_LIMITS[field].hi
        assert lab_panel.parse_values(str(hi), field) == (hi,)
        assert getattr(train_panel.train_job("a", "", "all", **{
            "expansion": 8, "k": 32, "max_tokens": 4_096} | {field: hi}).cfg, field) == hi
        with pytest.raises(gr.Error, match=f"from 1 to {hi}"):
            lab_panel.parse_values(str(hi + 1), field)
        with pytest.raises(ValueError, match=f"from 1 to {hi}"):
            train_panel.train_job("a", "", "all", **{
                "expansion": 8, "k": 32, "max_tokens": 4_096} | {field: hi + 1})
