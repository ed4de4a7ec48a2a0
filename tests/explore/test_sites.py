"""Sets at any site: an MLP-output build and a residual + attention-output build of the tiny
model read by the layer evidence, the feature index, the live view and the feature page
(the library functions and the tabs' callbacks), checked against direct re-encodings."""


import pytest
import torch

from sae_core.activations import layer_of, parse_hookpoint
from sae_core.atlas.build import build_atlas
from sae_core.atlas.layout import read_info
from sae_core.config import BuildConfig, TrainConfig
from sae_core.encode import BF16
from sae_core.explore.evidence import ensure_layer_evidence
from sae_core.explore.feature_index import ensure_feature_index
from sae_core.explore.feature_page import feature_page, open_index
from sae_core.explore.feature_path import feature_path
from sae_core.explore.layermap import read_layer_map
from sae_core.explore.lineage import read_lineage
from sae_core.explore.live import live_view
from sae_core.explore.names import read_names
from sae_core.explore.probing import read_probing
from sae_core.explore.search import features_by_label
from sae_core.hooks import run_captured
from tests.tiny import write_tiny_corpus
from ui.serving import session
from ui.shared.sites import hookpoint_at, layer_key

SITES = {"mlp": ("mlp",), "resid_attn": ("resid", "attn")}
TEXT = "the cat sat on the mat . a dog ran to Paris"


@pytest.fixture(scope="module")
def site_atlases(tmp_path_factory, tiny_atlas):
    """{name: folder} of the two builds (3 layers each; ~5 s together), with their layer
    evidence and feature index."""
    root = tmp_path_factory.mktemp("sites")
    corpus = write_tiny_corpus(root / "corpus.jsonl")
    lm = session.model("tiny-llama")  # tiny_atlas's model: one object per name for all tests
    cfg = TrainConfig(expansion=2, k=4, batch_tokens=64, lm_batch_tokens=64, bf16=False)
    out = {}
    for name, site in SITES.items():
        data = BuildConfig(corpus=str(corpus), seq_len=16, held_out=8, site=site)
        out[name] = build_atlas(root / name, data=data, cfg=cfg, lm=lm)
        ensure_layer_evidence(out[name], lm=lm)
        ensure_feature_index(out[name], lm=lm)
    return out


@pytest.mark.parametrize("name", list(SITES))
def test_every_product_lists_exactly_the_built_hookpoints(site_atlases, name):
    folder = site_atlases[name]
    built = BuildConfig(corpus="x", site=SITES[name]).hookpoints(3)
    assert list(read_info(folder).hookpoints) == built
    for product in (read_layer_map, read_probing, read_names, read_lineage):
        assert product(folder).hookpoints == built
    assert sorted(open_index(folder).meta["layers"]) == sorted(built)
    lmap = read_layer_map(folder)
    task = next(iter(lmap.vocab))
    hits = features_by_label(lmap, None, task, lmap.vocab[task][0], 0.0, 1)
    assert {h.hookpoint for h in hits} <= set(built)
    assert all(h.layer == layer_of(h.hookpoint) for h in hits)


def test_lineage_links_consecutive_layers_within_one_site(site_atlases):
    lineage = read_lineage(site_atlases["resid_attn"])
    for h in lineage.hookpoints:
        layer, site = parse_hookpoint(h)
        for direction, step in (("up", 1), ("down", -1)):
            has = any(k.startswith(f"{h}/{direction}/") for k in lineage.tables)
            assert has == (0 <= layer + step <= 2), (h, direction)
        path = feature_path(lineage, h, 0, floor=-1.0)  # never stops: walks the whole site
        assert [parse_hookpoint(s.hookpoint) for s in path.steps] == [(i, site) for i in range(3)]
    # the cosines stored are those of the decoder rows of the same site's next layer
    loaded = session.open_atlas(site_atlases["resid_attn"])
    a, b = loaded.saes["layers.0.attn"], loaded.saes["layers.1.attn"]
    idx, cos, _ = zip(*lineage.neighbours("layers.0.attn", 3, "up"), strict=True)
    direct = torch.nn.functional.cosine_similarity(a.W_dec[3][None], b.W_dec[list(idx)])
    assert torch.allclose(torch.tensor(cos), direct.float(), atol=0.02)
    assert lineage.turnover()["up"][2] is None and lineage.turnover()["up"][5] is None


@pytest.mark.parametrize("name", list(SITES))
def test_live_view_is_the_sae_encoding_of_the_captured_site(site_atlases, name):
    loaded = session.open_atlas(site_atlases[name])
    view = live_view(loaded, TEXT, top=None)
    assert view.hookpoints == tuple(list(read_info(loaded.folder).hookpoints))
    ids = torch.tensor([list(view.prefix_ids) + list(view.token_ids)])
    acts = run_captured(loaded.lm, ids, list(view.hookpoints), bf16=BF16)
    skip = len(view.prefix_ids)
    for j, h in enumerate(view.hookpoints):
        x_TD = acts[h][0, skip:].float()
        dense_TS, pre_TS = loaded.saes[h].encode(x_TD), loaded.saes[h].pre_acts(x_TD)
        for t in range(view.n_tokens):
            if view.flagged_TL[t, j]:
                continue
            fired = view.top_idx_TLK[t, j] >= 0
            got = dict(zip(view.top_idx_TLK[t, j][fired].tolist(),
                           view.top_act_TLK[t, j][fired].tolist(), strict=True))
            want = {f: v for f, v in enumerate(dense_TS[t].tolist()) if v > 0}
            # a tie at the k-th largest (within the views' precision) may go either way
            kth = min(want.values())
            odd = got.keys() ^ want.keys()
            assert len(odd) <= 2, (h, t)
            assert all(abs(pre_TS[t, f] - kth) <= 1e-3 * max(1.0, kth) for f in odd), (h, t)
            both = got.keys() & want.keys()
            assert all(abs(got[f] - want[f]) <= 1e-3 * max(1.0, want[f]) for f in both)


@pytest.mark.parametrize(("name", "hookpoint"), [("mlp", "layers.1.mlp"),
                                                 ("resid_attn", "layers.2.attn")])
def test_feature_page_snippets_match_a_direct_reencode(site_atlases, name, hookpoint):
    loaded = session.open_atlas(site_atlases[name])
    index = open_index(loaded.folder)
    alive = index.layer_stats(hookpoint)["n_fire"].nonzero().squeeze(1).tolist()
    page = feature_page(loaded, hookpoint, alive[0])
    assert page.top and page.hookpoint == hookpoint
    windows = sorted({s.window for s in page.top})
    ids = index.tokens_WL[windows].long()
    acts = run_captured(loaded.lm, ids, [hookpoint], bf16=BF16)[hookpoint]
    sae = loaded.saes[hookpoint]
    for s in page.top:
        x = acts[windows.index(s.window), s.position].float()
        direct = float(sae.encode(x[None]).detach()[0, page.feature])
        assert direct == pytest.approx(s.value, rel=2e-2, abs=1e-3)


def test_the_tabs_read_an_mlp_set(site_atlases):
    """The Live view's and Features tab's own callbacks on the MLP-output set."""
    from ui.features import tab as features
    from ui.live import tab as live

    folder = str(site_atlases["mlp"])
    hooks = list(read_info(folder).hookpoints)
    assert [key for _, key in features._layers(folder)] == [layer_key(h) for h in hooks]
    _, _, _, table, view = live.run_live(folder, TEXT)
    assert set(table["layer"]) == {f"{i} (MLP out)" for i in range(3)}
    key = "1 (MLP out)"
    f = features.random_alive(folder, key, seed=0)
    summary = features.page_outputs(folder, key, f)[0]
    assert f"Layer 1 (MLP out), feature {f}" in summary
    assert hookpoint_at(hooks, 1) == "layers.1.mlp"  # a bare number: the layer's only SAE
    assert features.page_outputs(folder, 1, f)[0] == summary
    assert view.hookpoints == tuple(hooks)


def test_the_tabs_tell_the_sites_of_a_mixed_set_apart(site_atlases):
    from ui.features import tab as features

    folder = str(site_atlases["resid_attn"])
    f = 0
    resid = features.page_outputs(folder, 2, f)[0]
    attn = features.page_outputs(folder, "2 (attention out)", f)[0]
    assert "Layer 2, feature 0" in resid and "Layer 2 (attention out), feature 0" in attn
    loaded = session.open_atlas(folder)
    for key, h in ((2, "layers.2"), ("2 (attention out)", "layers.2.attn")):
        n_fire = open_index(folder).layer_stats(h)["n_fire"]
        alive = features.random_alive(folder, key, seed=1)
        assert n_fire[alive] > 0 and alive < loaded.saes[h].cfg.d_sae


def test_api_and_links_name_sites(site_atlases):
    """The named API and deep links take a site's layer key; a bare number keeps meaning the
    layer's residual SAE where there is one."""
    from ui.api import AtlasApi
    from ui.serving.links import _as_shown, atlas_layers, check_link, parse_link

    folders = [str(f) for f in site_atlases.values()]
    api = AtlasApi(lambda: folders)
    listed = {a["name"]: a for a in api.list_atlases()}
    assert [s["hookpoint"] for s in listed["mlp"]["saes"]] == [f"layers.{i}.mlp" for i in range(3)]
    assert api.feature_page("resid_attn", "2 (attention out)", 0)["hookpoint"] == "layers.2.attn"
    assert api.feature_page("resid_attn", 2, 0)["hookpoint"] == "layers.2"
    assert api.feature_page("mlp", 2, 0)["hookpoint"] == "layers.2.mlp"
    on_text = api.features_on_text("resid_attn", TEXT, 1)
    assert on_text["hookpoints"] == list(read_info(folders[1]).hookpoints)
    folder = folders[1]
    link = check_link(parse_link({"layer": "1.attn", "feature": "3"}), atlas_layers(folder), [])
    assert not link.problems and _as_shown(link, folder).layer == "1 (attention out)"
    steer = parse_link({"tab": "steering", "layer": "1 (attention out)", "feature": "3"})
    dropped = _as_shown(check_link(steer, atlas_layers(folder), []), folder)
    assert dropped.feature is None and "More features" in dropped.message
    assert _as_shown(check_link(parse_link({"layer": "1", "feature": "3"}),
                                atlas_layers(folders[0]), []), folders[0]).layer == "1 (MLP out)"
