"""The app over a tiny atlas built end to end from a tiny random model."""

import app
from sae_core.explore.layermap import read_layer_map
from ui.saes import tab as saes


def test_saes_tab_summary(tiny_atlas):
    md, table, fig = saes.atlas_summary(str(tiny_atlas))
    assert "3 SAEs" in md
    assert table["hookpoint"].tolist() == ["layers.0", "layers.1", "layers.2"]
    assert (table["FVU"] >= 0).all() and (table["L0"] <= 4).all()
    assert len(fig.data) == 3


def test_missing_atlas_is_a_message_not_a_crash(tmp_path):
    md, table, fig = saes.atlas_summary(str(tmp_path / "nope"))
    assert md == "No atlas selected." and table.empty and fig is None


def test_the_built_app_wires_its_tabs_to_the_active_set(tiny_atlas):
    """What the app wires to what: the picker opens on the atlas, the tabs come in the order
    deep links name them, the public API is registered, the Steering tab's "Write both"
    reads the picker and the feature inputs, and the Features tab's "Steer with this
    feature" hands its layer and feature to those same inputs."""
    from ui.serving.links import TAB_IDS

    lmap = read_layer_map(tiny_atlas)
    assert lmap is not None and lmap.hookpoints == ["layers.0", "layers.1", "layers.2"]
    demo = app.build_app(tiny_atlas)
    config = demo.get_config_file()
    picker = next(b for b in demo.blocks.values() if getattr(b, "label", None) == "SAE set")
    assert picker.value == str(tiny_atlas)
    tabs = [c["props"]["id"] for c in config["components"] if c.get("type") == "tabitem"]
    assert tabs == list(TAB_IDS)
    names = {fn.api_name for fn in demo.fns.values()}
    assert {"list_atlases", "feature_page", "features_on_text", "steer_text", "steer",
            "find_features", "baselines"} <= names
    steer = next(fn for fn in demo.fns.values() if fn.api_name == "steer")
    labels = [b.label for b in steer.inputs]
    assert steer.inputs[0] is picker and labels[2:5] == [
        "Layer", "Feature", "Strength (x the layer's typical size)"]
    hand_over = next(fn for fn in demo.fns.values() if fn.api_name == "hand_over")
    assert {id(b) for b in steer.inputs[2:4]} <= {id(b) for b in hand_over.outputs}
