"""The app served over a copy of the tiny atlas with resolved steering presets and a feature
index (shared by the Tour and deep-link browser tests)."""

from contextlib import contextmanager

import pytest

import app
from sae_core.explore import concepts
from sae_core.explore.feature_index import ensure_feature_index
from sae_core.steer.presets import ResolvedPresets, ensure_presets
from tests.browser import served
from tests.steer.preset_helpers import NEUTRAL, TEMPLATES, planted_copy


@contextmanager
def planted_app(tiny_atlas, lm, tmp_path):
    """(URL, the atlas's resolved presets) while the app serves the planted atlas."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(concepts, "TEMPLATES", TEMPLATES)  # the search in the tiny vocabulary
        mp.setattr(concepts, "NEUTRAL", NEUTRAL)
        concepts._neutral.clear()
        planted, path = planted_copy(tiny_atlas, lm, tmp_path)
        mp.setattr("sae_core.steer.presets.CONCEPTS_FILE", path)  # the app's concept list
        presets: ResolvedPresets = ensure_presets(planted.folder, planted)
        ensure_feature_index(planted.folder, lm=lm)
        try:
            with served(app.build_app(planted.folder)) as url:
                yield url, presets
        finally:
            concepts._neutral.clear()
