"""Feature index, logit lens, feature pages and their views."""

import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from sae_core.activations import keep_mask
from sae_core.atlas.layout import LoadedAtlas
from sae_core.config import SaeConfig
from sae_core.explore.feature_index import (
    build_feature_index,
    collect_codes,
    ensure_feature_index,
    index_windows,
    sparse_codes,
)
from sae_core.explore.feature_page import check_ids, feature_page, open_index, token_pieces
from sae_core.explore.feature_stats import IndexConfig, index_layer
from sae_core.explore.logit_lens import direction_logits, logit_lens
from sae_core.hooks import run_captured
from sae_core.lm import LM, find_layers
from sae_core.sae import Sae
from tests.conftest import tiny_lm, tiny_tokenizer
from ui import session
from ui.features_view import density_figure, merged_pieces, snippets_html, summary_markdown

# --- the index on hand-made codes -------------------------------------------------------

SEQ, CHUNK = 8, 4  # 3 windows of 8 tokens, chunks of 4


def _codes(firings: dict[int, list[tuple[int, float]]], n_tokens: int = 24, k: int = 2):
    """(T, k) values and ids from {token: [(feature, value), ...]}; unused slots are 0."""
    vals, idx = torch.zeros(n_tokens, k), torch.zeros(n_tokens, k, dtype=torch.int32)
    for t, fired in firings.items():
        for slot, (f, v) in enumerate(fired):
            vals[t, slot], idx[t, slot] = v, f
    return vals, idx


HAND = {  # token: [(feature, activation)]; token t is window t // 8, position t % 8
    1: [(0, 0.5)], 2: [(0, 0.9), (2, 1.0)], 3: [(2, 3.0)], 5: [(0, 0.9)],
    9: [(0, 2.0), (2, 1.0)], 10: [(0, 0.25)], 13: [(2, 1.0)], 20: [(0, 0.1), (2, 1.0)],
}


def test_index_returns_exactly_the_top_contexts():
    cfg = IndexConfig(top_n=3, chunk=CHUNK, left=2, right=1, quantiles=(0.0, 1.0), hist_bins=4)
    out = index_layer(*_codes(HAND), d_sae=3, seq_len=SEQ, cfg=cfg)
    # Feature 0: chunk 0 peaks at token 2 (0.9 beats 0.5 at token 1), chunk 1 at token 5
    # (0.9, tie with token 2: the earlier token ranks first), chunk 2 at token 9 (2.0; 0.25
    # at token 10 is in the same chunk), chunk 5 at token 20.
    assert out["top_tok"][0].tolist() == [9, 2, 5]
    assert out["top_val"][0].tolist() == pytest.approx([2.0, 0.9, 0.9])
    assert out["n_ctx"].tolist() == [4, 0, 4] and out["n_fire"].tolist() == [6, 0, 5]
    # Quantile 0 is the weakest context (rank 3, outside the top 3); quantile 1 is the
    # strongest, already shown, so it is left empty.
    assert out["q_tok"][0].tolist() == [20, -1]
    assert out["q_val"][0, 0] == pytest.approx(0.1)
    # Feature 1 never fires: no contexts at all.
    assert (out["top_tok"][1] == -1).all() and (out["q_tok"][1] == -1).all()
    assert out["hist"][1].sum() == 0
    # Feature 2: chunk 0 peaks at token 3 (3.0 beats 1.0 at token 2) and leads; chunks 2, 3
    # and 5 (tokens 9, 13, 20) tie at 1.0 and rank by token.
    assert out["top_tok"][2].tolist() == [3, 9, 13]
    # Snippet of feature 0 around token 9 (window 1, position 1): offsets -2..1 are tokens
    # 7 (other window), 8 (position 0), 9 (the peak), 10.
    assert out["top_acts"][0, 0].tolist() == pytest.approx([0, 0, 2.0, 0.25], rel=1e-3)
    # Around token 2: tokens 0 (position 0, never shown), 1, 2, 3 (feature 0 silent there).
    assert out["top_acts"][0, 1].tolist() == pytest.approx([0, 0.5, 0.9, 0], rel=1e-3)


def _brute_force(vals, idx, d_sae, seq_len, cfg):
    """The top contexts by definition, with Python loops."""
    peaks = {}  # (feature, window, chunk) -> (value, token)
    for t in range(len(vals)):
        for v, f in zip(vals[t].tolist(), idx[t].tolist(), strict=True):
            if v <= 0:
                continue
            key = (f, t // seq_len, (t % seq_len) // cfg.chunk)
            best = peaks.get(key)
            if best is None or v > best[0]:  # ties keep the earlier token
                peaks[key] = (v, t)
    top = {}
    for (f, _, _), (v, t) in peaks.items():
        top.setdefault(f, []).append((-v, t))
    return {f: [t for _, t in sorted(c)[:cfg.top_n]] for f, c in top.items()}


def test_index_matches_brute_force_on_random_codes():
    gen = torch.Generator().manual_seed(0)
    T, K, F, L = 20 * 16, 4, 40, 16
    vals = torch.rand(T, K, generator=gen).round(decimals=1)  # many ties and zeros
    idx = torch.stack([torch.randperm(F, generator=gen)[:K] for _ in range(T)]).int()
    cfg = IndexConfig(top_n=5, chunk=4)
    out = index_layer(vals, idx, F, L, cfg)
    expected = _brute_force(vals, idx, F, L, cfg)
    for f in range(F):
        got = [t for t in out["top_tok"][f].tolist() if t >= 0]
        assert got == expected.get(f, []), f
    dense = torch.zeros(T, F).scatter_(1, idx.long(), vals)
    for f in range(F):
        for s, t in enumerate(out["top_tok"][f].tolist()):
            for j, o in enumerate(range(-cfg.left, cfg.right + 1)):
                u = t + o
                shown = t >= 0 and u // L == t // L and u % L > 0
                want = float(dense[u, f]) if shown else 0.0
                assert float(out["top_acts"][f, s, j]) == pytest.approx(want, rel=1e-3)
    fires = vals > 0
    assert out["n_fire"].tolist() == torch.bincount(idx[fires].long(), minlength=F).tolist()
    assert torch.equal(out["hist"].sum(1).long(), out["n_fire"])


def test_histogram_bins_are_log_spaced():
    vals, idx = _codes({1: [(0, 1.0)], 2: [(0, 10.0)], 3: [(0, 100.0)], 4: [(0, 9.9)]})
    out = index_layer(vals, idx, 1, SEQ, IndexConfig(hist_bins=2))
    # 1, 9.9 below sqrt(1 * 100) = 10; 10 and 100 at or above it.
    assert out["hist"][0].tolist() == [2, 2]
    assert (out["hist_lo"][0], out["hist_hi"][0]) == (1.0, 100.0)


def test_index_windows_put_held_out_first():
    windows = torch.arange(100 * 4).view(100, 4)
    chosen, source = index_windows(windows, held_out=10, max_tokens=4 * 30)
    assert source == {"heldout_windows": 10, "train_windows": 20, "train_stride": 4}
    assert len(chosen) == 30 and len({tuple(w) for w in chosen.tolist()}) == 30


# --- end to end on a tiny model with hand-set SAEs ---------------------------------------

HOOKS = ["layers.0", "layers.2"]


@pytest.fixture(scope="module")
def hand_atlas(tmp_path_factory):
    """A tiny LM, two SAEs; feature 0 never fires, feature 1 fires on every token."""
    lm = tiny_lm()
    gen = torch.Generator().manual_seed(1)
    windows = torch.randint(3, 16, (12, 16), generator=gen)
    acts = run_captured(lm, windows, HOOKS, bf16=False)
    saes = {}
    for i, h in enumerate(HOOKS):
        sae = Sae.init_from_data(SaeConfig(d_in=32, d_sae=48, k=4, hookpoint=h),
                                 acts[h].flatten(0, 1), seed=i)
        with torch.no_grad():
            sae.b_enc[0], sae.b_enc[1] = -1e4, 1e4
        sae.metadata = {"median_norm": 1e9}
        saes[h] = sae
    out = tmp_path_factory.mktemp("hand")
    cfg = IndexConfig(top_n=6, chunk=4, left=3, right=2, bf16=False)
    build_feature_index(lm, saes, {h: 1e9 for h in HOOKS}, windows, out, outlier_factor=10.0,
                        cfg=cfg)
    loaded = LoadedAtlas(out, {"hookpoints": HOOKS}, {}, saes, lm)
    return loaded, windows, cfg


def test_build_matches_dense_encoding(hand_atlas):
    loaded, windows, cfg = hand_atlas
    acts = run_captured(loaded.lm, windows, HOOKS, bf16=False)
    for h in HOOKS:
        keep = keep_mask(acts[h], 1e9, 10.0).reshape(-1)
        dense = loaded.saes[h].encode(acts[h].flatten(0, 1).float()).detach() * keep[:, None]
        vals, idx = dense.topk(4, dim=1)
        expected = _brute_force(vals, idx, 48, 16, cfg)
        assert len(expected) > 30  # most features fire somewhere
        for f in range(2, 48):
            page = feature_page(loaded, h, f)
            assert [s.window * 16 + s.position for s in page.top] == expected.get(f, [])
            assert page.n_fire == int((dense[:, f] > 0).sum()) and page.n_tokens == 12 * 15
            for s in page.top:
                t = s.window * 16 + s.position
                assert s.value == pytest.approx(float(dense[t, f]))
                assert s.acts[s.peak] == pytest.approx(s.value, rel=1e-3)  # fp16 snippet
                lo = t - s.peak
                assert list(s.acts) == pytest.approx(dense[lo:lo + len(s.acts), f].tolist(),
                                                     rel=1e-3, abs=1e-3)
                text = loaded.lm.tokenizer.decode(windows.view(-1)[lo:lo + len(s.acts)])
                assert "".join(s.pieces) == text


def test_dead_and_always_on_features(hand_atlas):
    loaded, _, cfg = hand_atlas
    dead = feature_page(loaded, "layers.2", 0)
    assert dead.dead and dead.top == () and dead.samples == () and dead.density == 0
    assert "never fired" in snippets_html(dead) and "Dead" in summary_markdown(dead)
    assert len(dead.promoted) == 10  # the logit lens works for any feature
    always = feature_page(loaded, "layers.2", 1)
    assert always.density == 1.0 and always.n_contexts == 12 * 4
    assert len(always.top) == cfg.top_n and len(always.samples) > 0
    assert sum(always.hist_counts) == always.n_fire


def test_bad_ids_are_clear_errors(hand_atlas):
    loaded, _, _ = hand_atlas
    for hook, feat, msg in [("layers.1", 0, "not in this SAE set"),
                            ("layers.0", 48, "out of range"), ("layers.0", -1, "out of range"),
                            ("layers.0", 2.5, "whole number"), ("layers.0", "x", "whole number"),
                            ("layers.0", None, "whole number")]:
        with pytest.raises(ValueError, match=msg):
            check_ids(loaded, hook, feat)
    assert check_ids(loaded, "layers.0", "7") == 7


def test_ensure_feature_index_on_tiny_atlas(tiny_atlas):
    lm = session.open_atlas(tiny_atlas).lm
    meta = ensure_feature_index(tiny_atlas, lm=lm)
    assert set(meta["layers"]) == {"layers.0", "layers.1", "layers.2"}
    assert meta["source"]["heldout_windows"] == 8
    assert json.loads((tiny_atlas / "features" / "index.json").read_text()) == meta
    assert ensure_feature_index(tiny_atlas) == meta  # cached: no model needed now
    loaded = session.open_atlas(tiny_atlas)
    busiest = int(open_index(tiny_atlas).layer_stats("layers.1")["n_fire"].argmax())
    page = feature_page(loaded, "layers.1", busiest)
    assert page.top and page.n_fire > 0
    assert page.labels  # the tiny atlas has a layer map
    assert all(0 <= lab.consistency <= 1 for lab in page.labels)


def test_codes_skip_position_zero_and_outliers(lm):
    sae = Sae.init_from_data(SaeConfig(d_in=32, d_sae=16, k=2), torch.randn(8, 32))
    windows = torch.randint(3, 16, (2, 8))
    acts = run_captured(lm, windows, ["layers.1"], bf16=False)["layers.1"]
    median = float(acts.norm(dim=-1).median())
    codes = collect_codes(lm, {"layers.1": sae}, {"layers.1": median}, windows,
                          outlier_factor=1.0, cfg=IndexConfig(bf16=False))
    vals, _, kept = codes["layers.1"]
    keep = keep_mask(acts, median, 1.0).reshape(-1)
    assert kept == int(keep.sum()) < 14
    assert (vals[~keep] == 0).all() and (vals[keep].sum(1) > 0).all()


# --- logit lens ---------------------------------------------------------------------------


def test_logit_lens_on_hand_set_weights():
    lm = tiny_lm()
    with torch.no_grad():
        lm.model.model.norm.weight.fill_(1.0)
        lm.model.model.norm.weight[3] = -2.0
        w_u = lm.model.get_output_embeddings().weight
        w_u.zero_()
        w_u[10, 3], w_u[11, 3], w_u[12, 3] = 1.0, 3.0, -5.0
        w_u[20, 4] = 9.0
    e3 = torch.zeros(32)
    e3[3] = 1.0
    lens = logit_lens(lm, e3, k=2)
    # The gain -2 flips dimension 3: token 12 (-5 * -2) is promoted most, 11 suppressed most.
    assert lens.top_ids.tolist() == [12, 10] or lens.top_ids.tolist()[0] == 12
    assert lens.bottom_ids.tolist() == [11, 10]
    # rms of a unit vector in 32 dims is 1/sqrt(32): scores are W_U (gain * d) * sqrt(32).
    assert lens.top_vals[0] == pytest.approx(10 * 32 ** 0.5, rel=1e-4)
    assert lens.bottom_vals[0] == pytest.approx(-6 * 32 ** 0.5, rel=1e-4)


def test_logit_lens_ignores_layernorm_bias():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=40)).eval()
    lm = LM(model, tiny_tokenizer(), "tiny-gpt2", find_layers(model))
    d = torch.randn(2, 16)
    before = direction_logits(lm, d)
    with torch.no_grad():
        model.transformer.ln_f.bias.normal_(0, 5)
    after = direction_logits(lm, d)
    assert torch.allclose(before, after, atol=1e-4)
    centred = (d - d.mean(1, keepdim=True)) / d.std(1, unbiased=False, keepdim=True)
    expected = (centred * model.transformer.ln_f.weight) @ model.lm_head.weight.T
    assert torch.allclose(after, expected, atol=1e-3)


# --- pieces and highlighting ---------------------------------------------------------------


@pytest.fixture(scope="module")
def smol_tokenizer():
    from transformers import AutoTokenizer

    from sae_core.lm import DEFAULT_CACHE

    path = DEFAULT_CACHE / "SmolLM2-135M-Instruct"
    if not (path / "tokenizer.json").exists():
        pytest.skip("the embedded model was never converted here")
    return AutoTokenizer.from_pretrained(str(path))


@pytest.mark.parametrize("text", [
    "Crème brûlée in Zürich 🦜🦜 costs 5€ — naïve 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 漢字 Constantinopolitan",
    "\n\ttabs\tand\nnew lines 👩‍👩‍👧 family",
])
def test_pieces_align_with_real_tokens(smol_tokenizer, text):
    ids = smol_tokenizer(text, add_special_tokens=False).input_ids
    pieces = token_pieces(smol_tokenizer, ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == text == smol_tokenizer.decode(ids)
    assert "\ufffd" not in "".join(pieces)
    # A word split into several tokens keeps one piece per token, in order.
    word = " Constantinopolitan"
    if word in text:
        assert any(len(p) < len(word) and p and word.startswith(p) for p in pieces)


def test_merged_pieces_carry_the_max_activation(smol_tokenizer):
    from sae_core.explore.feature_page import Snippet

    ids = smol_tokenizer("a 🦜 b", add_special_tokens=False).input_ids
    pieces = token_pieces(smol_tokenizer, ids)
    assert "" in pieces  # the parrot takes several byte-level tokens
    acts = tuple(float(i) for i in range(len(ids)))
    snip = Snippet(tuple(pieces), acts, peak=len(ids) - 2, value=acts[-2], window=0,
                   position=5)
    merged = merged_pieces(snip)
    assert "".join(t for t, _, _ in merged) == "a 🦜 b"
    parrot = next(m for m in merged if "🦜" in m[0])
    last_parrot_token = max(i for i, p in enumerate(pieces) if p == "")
    assert parrot[1] == acts[last_parrot_token]
    assert sum(m[2] for m in merged) == 1


def test_density_figure_shows_dead_features():
    n_fire = torch.tensor([0, 0, 0, 1, 10, 100, 1000])
    fig = density_figure(n_fire, 1000, layer=3, mark=0.1)
    alive, dead = fig.data
    assert dead.y[0] == 3 and sum(alive.y) == 4
    assert max(alive.x) <= 0.125  # density 1 sits in the last bin


# --- the tab's callbacks -------------------------------------------------------------------


def test_tab_callbacks_on_tiny_atlas(tiny_atlas):
    import gradio as gr

    from ui import features as tab

    ensure_feature_index(tiny_atlas, lm=session.open_atlas(tiny_atlas).lm)
    folder = str(tiny_atlas)
    f = tab.random_alive(folder, 1, seed=3)
    assert open_index(tiny_atlas).layer_stats("layers.1")["n_fire"][f] > 0
    summary, hist, logits, html, density = tab.page_outputs(folder, 1, f)
    assert f"feature {f}" in summary and "<span" in html
    assert len(logits) == 10 and hist is not None and len(density.data) == 2
    assert tab.step_feature(folder, 1, 63, 1) == 0 and tab.step_feature(folder, 1, 0, -1) == 63
    for layer, feature in [(7, 0), (1, 64), (1, -3), (None, 0), ("x", 1), (1, None)]:
        with pytest.raises(ValueError):
            tab.page_outputs(folder, layer, feature)
        with pytest.raises(gr.Error):
            tab._ui(tab.page_outputs)(folder, layer, feature)
    with pytest.raises(ValueError, match="SAE set"):
        tab.page_outputs(None, 1, 0)


def test_tab_without_index_says_so(tmp_path):
    from ui import features as tab

    (tmp_path / "atlas.json").write_text("{}")
    out = tab.page_outputs(str(tmp_path), 0, 0)
    assert out[0] == tab.NO_INDEX and out[1] is None


def test_layer_numbers_map_to_the_atlas_hookpoints(tmp_path):
    from ui import features as tab

    hooks = ["layers.3.mlp", "layers.5.mlp", "layers.5"]
    (tmp_path / "atlas.json").write_text(json.dumps({"hookpoints": hooks}))
    assert tab._layers(str(tmp_path)) == [3, 5]
    assert tab._hookpoint(str(tmp_path), 3) == "layers.3.mlp"
    assert tab._hookpoint(str(tmp_path), "5") == "layers.5"  # the residual one first
    with pytest.raises(ValueError, match="its layers are 3, 5"):
        tab._hookpoint(str(tmp_path), 4)


def test_index_codes_respect_a_jumprelu_threshold():
    """A JumpReLU latent below its threshold does not fire, so it never enters the index."""
    sae = Sae(SaeConfig(d_in=2, d_sae=2, architecture="jumprelu", k=2))
    with torch.no_grad():
        sae.W_enc_SD.copy_(torch.eye(2))
        sae.threshold.copy_(torch.tensor([0.5, 0.0]))
    vals, idx = sparse_codes(sae, torch.tensor([[0.3, 0.2]]), bf16=False)
    by_latent = dict(zip(idx[0].tolist(), vals[0].tolist(), strict=True))
    assert by_latent == {0: 0.0, 1: pytest.approx(0.2)}
