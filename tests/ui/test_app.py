"""The app over a tiny atlas built end to end from a tiny random model."""

import app
from sae_core.explore.layermap import read_layer_map
from ui import saes


def test_saes_tab_summary(tiny_atlas):
    md, table, fig = saes.atlas_summary(str(tiny_atlas))
    assert "3 SAEs" in md
    assert table["hookpoint"].tolist() == ["layers.0", "layers.1", "layers.2"]
    assert (table["FVU"] >= 0).all() and (table["L0"] <= 4).all()
    assert len(fig.data) == 3


def test_missing_atlas_is_a_message_not_a_crash(tmp_path):
    md, table, fig = saes.atlas_summary(str(tmp_path / "nope"))
    assert md == "No atlas selected." and table.empty and fig is None


def test_app_builds_with_layer_map(tiny_atlas):
    lmap = read_layer_map(tiny_atlas)
    assert lmap is not None and lmap.hookpoints == ["layers.0", "layers.1", "layers.2"]
    demo = app.build_app(tiny_atlas)
    assert demo is not None
