"""Lineage figures from hand-made lineage data and paths."""

from sae_core.explore.feature_path import FeaturePath, PathStep, PathStop
from sae_core.explore.lineage import LineageData
from ui.shared.lineage_view import START_COLOR, path_figure, turnover_figure


def test_turnover_figure_has_one_curve_per_direction_in_percent():
    lin = LineageData(["layers.0", "layers.1", "layers.2"], 5, {}, [0.5, 0.25, None],
                      [None, 0.5, 1.0], has_coact=False)
    fig = turnover_figure(lin)
    up, down = fig.data
    assert list(up.x) == [0, 1, 2] and list(up.y) == [50.0, 25.0, None]
    assert list(down.y) == [None, 50.0, 100.0]
    assert "next layer" in up.name and "below" in down.name
    assert "carries on to the next" in fig.layout.title.text
    assert "0.7" in fig.layout.yaxis.title.text
    counted = LineageData(lin.hookpoints, 5, {}, lin.turnover_up, lin.turnover_down,
                          has_coact=False, alive=[400, 400, 400])
    filled = [d for d in turnover_figure(counted).data if d.fill == "tonexty"]
    # the upper edges, in percent: 400 features drawn again around 50% and 25%
    assert len(filled) == 2 and 50 < filled[0].y[0] < 56 and filled[0].y[2] is None


def _path() -> FeaturePath:
    steps = (PathStep("layers.1", 4, 0.91, 0.5), PathStep("layers.2", 8, None, None),
             PathStep("layers.3", 2, 0.8, None))
    return FeaturePath(steps, 1, PathStop("layers.4", 0.12), None)


def test_path_figure_marks_the_feature_and_where_the_path_stopped():
    names = {("layers.2", 8): "<b>the</b> · DET", ("layers.3", 2): "nouns"}
    fig = path_figure(_path(), names)
    path, stops = fig.data
    assert list(path.x) == [1, 2, 3] and list(path.text) == ["4", "8", "2"]
    assert [c == START_COLOR for c in path.marker.color] == [False, True, False]
    assert path.marker.size[1] > path.marker.size[0]
    below, start, above = path.hovertext
    assert "feature 4" in below and "layer 2's feature 8: 0.91" in below
    assert "Jaccard): 0.50" in below
    assert "&lt;b&gt;the&lt;/b&gt; · DET" in start and "asked about" in start
    assert "nouns" in above and "layer 2's feature 8: 0.80" in above
    assert "Jaccard" not in above  # computed without firings there
    assert list(stops.x) == [4] and "0.12" in stops.hovertext[0]
    assert "feature 8" in fig.layout.title.text


def test_path_figure_without_names_or_stops():
    steps = (PathStep("layers.0", 1, None, None),)
    fig = path_figure(FeaturePath(steps, 0, None, None))
    assert len(fig.data) == 1 and fig.data[0].hovertext[0].startswith("layer 0, feature 1")


def test_turnover_figure_adds_the_random_model_dashed():
    lin = LineageData(["layers.0", "layers.1"], 5, {}, [0.5, None], [None, 0.5],
                      has_coact=False)
    fig = turnover_figure(lin, control=lin)
    assert len(fig.data) == 4
    assert [d.line.dash for d in fig.data] == [None, None, "dash", "dash"]
