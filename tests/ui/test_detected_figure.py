"""The names figure: per layer the share of alive features a name detects, its band from
the stored document draws, and the random model's line dashed."""

import torch
from pytest import approx

from sae_core.explore.names import DRAWS, FeatureNames
from ui.shared.names_view import detected_figure
from ui.shared.plots import CONTROL_MODEL


def _layer(f1: list[float], support: list[int], draws: list[float] | None) -> dict:
    n = len(f1)
    lay = {"scores": torch.tensor([[0.0, 0.0, v] for v in f1]),
           "support": torch.tensor(support), "rule": torch.ones(n, dtype=torch.long)}
    return lay | ({DRAWS: torch.tensor(draws)} if draws is not None else {})


def _names(with_draws: bool) -> FeatureNames:
    draws = [float(x) for x in range(200)] if with_draws else None
    # layer 0: 2 of 4 alive features reach F1 0.5 (a dead one does not count)
    layers = {"layers.0": _layer([0.9, 0.6, 0.1, 0.2, 0.9], [5, 5, 5, 5, 0],
                                 [d % 3 + 1 for d in draws] if draws else None),
              "layers.1": _layer([0.1, 0.9], [3, 3], [1.0] * 200 if draws else None)}
    return FeatureNames(list(layers), ["pos"], {"pos": ["A"]}, {}, layers)


def test_each_layer_shows_its_share_its_band_and_the_random_model_dashed():
    fig = detected_figure(_names(True), control=_names(False))
    line = next(d for d in fig.data if d.name == "features a name detects")
    assert list(line.x) == [0, 1] and list(line.y) == approx([50.0, 50.0])
    upper = [d for d in fig.data if d.fill == "tonexty"]
    # layer 0's draws count 1, 2 or 3 of its 4 alive features; layer 1's always 1 of 2
    assert len(upper) == 1 and list(upper[0].y) == approx([75.0, 50.0])
    dashed = next(d for d in fig.data if d.name and d.name.endswith(CONTROL_MODEL))
    assert dashed.line.dash == "dash"
    assert not [d for d in detected_figure(_names(False)).data if d.fill == "tonexty"]
