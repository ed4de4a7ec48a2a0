"""A hand-made atlas for the feature index and page tests: two SAEs of the tiny model with
one feature that never fires and one that always fires."""

import pytest
import torch

from sae_core.atlas.info import AtlasInfo
from sae_core.atlas.layout import LoadedAtlas
from sae_core.config import SaeConfig
from sae_core.explore.feature_index import (
    build_feature_index,
)
from sae_core.explore.feature_stats import IndexConfig
from sae_core.hooks import run_captured
from sae_core.sae import Sae
from tests.conftest import save_as_atlas, tiny_lm
from tests.explore.index_helpers import HOOKS


@pytest.fixture(scope="module")
def hand_atlas(tmp_path_factory):
    """A tiny LM, two SAEs; feature 0 never fires, feature 1 fires on every token."""
    lm = tiny_lm()
    gen = torch.Generator().manual_seed(1)
    windows = torch.randint(3, 16, (12, 16), generator=gen)
    acts = run_captured(lm, windows, HOOKS)
    saes = {}
    for i, h in enumerate(HOOKS):
        sae = Sae.init_from_data(SaeConfig(d_in=32, d_sae=48, k=4, hookpoint=h),
                                 acts[h].flatten(0, 1), seed=i)
        with torch.no_grad():
            sae.b_enc[0], sae.b_enc[1] = -1e4, 1e4
        sae.metadata = {"median_norm": 1e9}
        saes[h] = sae
    out = tmp_path_factory.mktemp("hand")
    cfg = IndexConfig(top_n=6, chunk=4, left=3, right=2)
    fingerprint = save_as_atlas(out, saes)
    build_feature_index(lm, saes, {h: 1e9 for h in HOOKS}, windows, out, outlier_factor=10.0,
                        cfg=cfg, fingerprint=fingerprint)
    loaded = LoadedAtlas(out, AtlasInfo(model=lm.name, hookpoints=tuple(HOOKS)), {}, saes, lm,
                         fingerprint)
    return loaded, windows, cfg
