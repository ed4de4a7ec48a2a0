"""The live view, text search and feature pages on the tiny gemma3 and gpt-neox models, at a
residual, an MLP and an attention hookpoint (gemma's sublayers are read after their
post-norms): the views' numbers are the SAE's on separately captured activations."""

import pytest
import torch

from sae_core.atlas.info import AtlasInfo
from sae_core.atlas.layout import LoadedAtlas
from sae_core.config import SaeConfig
from sae_core.encode import BF16, encode_dense
from sae_core.explore.feature_index import build_feature_index
from sae_core.explore.feature_page import feature_page
from sae_core.explore.feature_stats import IndexConfig
from sae_core.explore.live import live_view
from sae_core.explore.search import search_text
from sae_core.hooks import hooks_left, run_captured
from sae_core.sae import Sae
from tests.conftest import save_as_atlas
from tests.models.families import family_lm

HOOKS = ["layers.0", "layers.1.mlp", "layers.2.attn"]
TEXT = "the cat sat on the mat . Paris is big , a dog ran"


@pytest.fixture(scope="module", params=["gemma3", "gpt_neox"])
def atlas(request, tmp_path_factory):
    lm = family_lm(request.param)
    windows = torch.randint(3, 16, (12, 16), generator=torch.Generator().manual_seed(1))
    acts = run_captured(lm, windows, HOOKS, bf16=False)
    saes = {}
    for i, h in enumerate(HOOKS):
        sae = Sae.init_from_data(SaeConfig(d_in=lm.d_model, d_sae=48, k=4, hookpoint=h),
                                 acts[h][:, 1:].flatten(0, 1), seed=i)
        sae.metadata = {"median_norm": float(acts[h][:, 1:].norm(dim=-1).median())}
        saes[h] = sae
    out = tmp_path_factory.mktemp(request.param)
    fingerprint = save_as_atlas(out, saes)
    build_feature_index(lm, saes, {h: s.metadata["median_norm"] for h, s in saes.items()},
                        windows, out, outlier_factor=1e6, cfg=IndexConfig(top_n=4, chunk=8),
                        fingerprint=fingerprint)
    info = AtlasInfo(model=lm.name, hookpoints=tuple(HOOKS), train_cfg={"outlier_factor": 1e6})
    return LoadedAtlas(out, info, {}, saes, lm, fingerprint), windows


def test_live_view_shows_the_saes_features(atlas):
    loaded, _ = atlas
    view = live_view(loaded, TEXT, top=3)
    assert view.n_tokens == len(TEXT.split()) and not view.flagged_TL.any()
    ids = torch.tensor([[*view.prefix_ids, *view.token_ids]])
    acts = run_captured(loaded.lm, ids, HOOKS, bf16=BF16)
    for j, h in enumerate(HOOKS):
        dense_TS = encode_dense(loaded.saes[h], acts[h][0, len(view.prefix_ids):])
        top_vals = dense_TS.max(dim=1, keepdim=True).values
        fired = top_vals[:, 0] > 0
        assert fired.any()
        strongest = view.top_act_TLK[:, j].max(dim=1).values
        torch.testing.assert_close(strongest[fired], top_vals[fired, 0], atol=1e-5, rtol=1e-4)
    hits, _ = search_text(loaded, TEXT, limit=5)
    assert hits and {hit.layer for hit in hits} <= {0, 1, 2}
    assert hooks_left(loaded.lm) == 0


def test_feature_page_top_context_is_the_features_peak(atlas):
    loaded, windows = atlas
    acts = run_captured(loaded.lm, windows, HOOKS, bf16=BF16)
    for h in HOOKS:
        dense = encode_dense(loaded.saes[h], acts[h][:, 1:].flatten(0, 1))  # position 0 skipped
        f = int(dense.max(dim=0).values.argmax())
        page = feature_page(loaded, h, f)
        assert page.n_fire == int((dense[:, f] > 0).sum()) and page.top
        assert page.top[0].value == pytest.approx(float(dense[:, f].max()), rel=1e-4)
        assert page.promoted and page.suppressed
