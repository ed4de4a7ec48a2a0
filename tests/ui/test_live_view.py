"""The live view's heatmap and token table show the strongest features."""

import math

import numpy as np
import pytest
import torch

from sae_core.explore.layermap import read_layer_map
from sae_core.explore.live import live_view
from ui.live.view import heatmap, token_choices, token_table


def test_heatmap_and_token_table_show_the_strongest_features(loaded):
    view = live_view(loaded, "Paris is big , the dog ran")
    fig = heatmap(view, read_layer_map(loaded.folder))
    z = np.asarray(fig.data[0].z, dtype=float)
    assert z.shape == (view.n_tokens, len(loaded.hookpoints))
    idx, act = view.strongest()
    assert np.allclose(z, (act / torch.tensor(view.medians)).numpy(), atol=1e-5)
    custom = fig.data[0].customdata
    assert [int(c) for c in custom[:, 1, 1]] == idx[:, 1].tolist()
    assert "feature" in fig.data[0].hovertemplate and "label" in fig.data[0].hovertemplate
    assert [c[1] for c in token_choices(view)] == list(range(view.n_tokens))
    table = token_table(view, 2, read_layer_map(loaded.folder), per_layer=2)
    assert table["layer"].tolist() == [0, 0, 1, 1, 2, 2]
    assert table["feature"].tolist() == view.top_idx_TLK[2, :, :2].reshape(-1).tolist()
    assert all(isinstance(x, str) and x for x in table["label"])
    with pytest.raises(ValueError, match="out of range"):
        token_table(view, view.n_tokens, read_layer_map(loaded.folder))
    assert not math.isnan(float(table["of typical norm"].iloc[0]))
