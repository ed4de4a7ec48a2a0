import pytest
import torch

from sae_core.explore.layermap import KINDS, LayerMapData
from ui.layer_map.view import feature_table, heatmap_figure, present_labels, summary_rows


def _lmap():
    # 4 features x 3 labels on layer 0; label "c" never occurs in the corpus
    counts = torch.tensor([[9, 1, 0], [5, 5, 0], [0, 0, 0], [0, 3, 0]])
    tasks = ("pos", "dep", "ent", "shape")
    all_counts = {f"{k}/layers.0/{t}": counts for k in KINDS for t in tasks}
    base = {t: torch.tensor([0.75, 0.25, 0.0], dtype=torch.float64) for t in tasks}
    vocab = {t: ["a", "b", "c"] for t in tasks}
    return LayerMapData(["layers.0"], vocab, all_counts, base, n_tokens=100, fire_rate=0.01)


def test_feature_table_lists_exactly_the_cell():
    lmap = _lmap()
    table = feature_table(lmap, "pos", 0, "a", threshold=0.5, min_support=1)
    assert table["feature"].tolist() == [0, 1]  # 0.9 then the 5/5 tie (lowest label id wins)
    assert table["consistency"].tolist() == [0.9, 0.5]
    assert table["lift"].tolist() == [1.2, 0.7]  # 0.9 / 0.75, 0.5 / 0.75
    table_b = feature_table(lmap, "pos", 0, "b", threshold=0.5, min_support=4)
    assert table_b.empty  # feature 3 is pure "b" but fired only 3 times
    assert feature_table(lmap, "pos", 0, "b", 0.5, 3)["feature"].tolist() == [3]


def test_heatmap_hides_absent_labels_and_bad_cells_are_errors():
    lmap = _lmap()
    assert present_labels(lmap, "pos") == [0, 1]
    fig = heatmap_figure(lmap, "pos", 0.5, 1)
    assert list(fig.data[0].x) == ["a", "b"]
    assert fig.data[0].z.tolist() == [[2, 1]]
    with pytest.raises(ValueError, match="layer 7"):
        feature_table(lmap, "pos", 7, "a", 0.5, 1)
    with pytest.raises(ValueError, match="unknown pos label"):
        feature_table(lmap, "pos", 0, "zzz", 0.5, 1)
    assert len(summary_rows(lmap, 0.5, 1)) == 4


def test_lines_carry_bands_at_the_intervals_criteria_and_the_random_model_dashed():
    from sae_core.explore.layermap import CRITERIA
    from ui.layer_map.view import CONTROL_MODEL, lines_figure

    lmap = _lmap()
    crit = CRITERIA._asdict()
    lmap.intervals = {"setting": {"criteria": crit},
                      "share": {f"{k}/pos": [[0.1, 0.3]] for k in KINDS}}
    fig = lines_figure(lmap, "pos", *CRITERIA)
    filled = [d for d in fig.data if d.fill == "tonexty"]
    assert len(filled) == len(KINDS)
    assert list(filled[0].y) == [30.0] and not filled[0].showlegend
    # other criteria: no band (the intervals hold only where they were computed)
    assert not [d for d in lines_figure(lmap, "pos", 0.5, 1).data if d.fill == "tonexty"]
    twin = lines_figure(lmap, "pos", *CRITERIA, control=_lmap())
    dashed = [d for d in twin.data if d.name and d.name.endswith(CONTROL_MODEL)]
    assert len(dashed) == 1 and dashed[0].line.dash == "dash"
    assert f"SAE features, {CONTROL_MODEL}" in summary_rows(lmap, 0.5, 1, control=_lmap())
