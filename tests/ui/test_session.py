"""The app's session: each model and atlas is loaded once and shared."""

from ui import session


def test_atlases_and_models_load_once(tiny_atlas):
    loaded = session.open_atlas(tiny_atlas)
    assert session.open_atlas(str(tiny_atlas)) is loaded  # str or Path, the same atlas
    assert session.model(loaded.info["model"]) is loaded.lm
    assert loaded.lm.name == "tiny-llama" and loaded.folder == tiny_atlas
