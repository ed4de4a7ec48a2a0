"""Pretrained SAEs through the real huggingface_hub code path, from hand-built caches.

Each test writes a Hugging Face cache folder by hand (models--org--name/blobs, snapshots/<rev>
with symlinks, refs/main) and loads from it offline (HF_HUB_OFFLINE=1 from conftest).
Encodings are checked against plain torch formulas applied to the raw tensors.
"""

import hashlib
import http.server
import json
import math
import os
import threading

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub import constants
from safetensors.torch import save as st_bytes

from sae_core.atlas.layout import is_built, list_atlases, load_atlas
from sae_core.config import SaeConfig
from sae_core.explore.feature_index import ensure_feature_index
from sae_core.explore.layermap import ensure_layer_map
from sae_core.explore.live import live_view
from sae_core.hooks import run_captured
from sae_core.hub import export as hub_export
from sae_core.hub import pretrained_atlas as hub_atlas
from sae_core.hub.fetch import HubError
from sae_core.hub.formats import hookpoint_of
from sae_core.hub.load import load_pretrained
from sae_core.hub.registry import RELEASES, releases_for, same_model
from sae_core.sae import Sae
from tests.browser import browser_page, needs_chromium, served
from ui import saes as saes_ui
from ui import session

REV = "1f" * 20
D, S = 32, 64  # tiny model width, SAE width


def put_repo(cache, repo_id, files, rev=REV):
    """Write `files` (repo path -> bytes or dict) into the HF cache layout; return the cache."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    for name, data in files.items():
        data = json.dumps(data).encode() if isinstance(data, dict) else data
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / rev / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(rev)
    return cache


def raw_saelens(seed=0, d_sae=S, threshold=False):
    g = torch.Generator().manual_seed(seed)
    t = {"W_enc": torch.randn(D, d_sae, generator=g) / 4, "b_enc": torch.randn(d_sae, generator=g),
         "W_dec": torch.randn(d_sae, D, generator=g) / 4, "b_dec": torch.randn(D, generator=g)}
    if threshold:
        t["threshold"] = torch.rand(d_sae, generator=g) * 2
    return t


def v6_cfg(arch="standard", hook="blocks.1.hook_resid_post", model="tiny-llama", **kw):
    return {"d_in": D, "d_sae": S, "architecture": arch, "apply_b_dec_to_input": True,
            "normalize_activations": "none", "dtype": "float32", "device": "cpu",
            "metadata": {"model_name": model, "hook_name": hook, "sae_lens_version": "6.5.0"},
            **kw}


def hidden(lm, layer):
    """Reference input: HF hidden_states[layer + 1], i.e. block `layer`'s output."""
    ids = torch.arange(3, 3 + 13).repeat(2, 1)
    with torch.no_grad():
        return ids, lm.model(ids, output_hidden_states=True).hidden_states[layer + 1][:, 1:]


def ours(lm, ids, sae):
    x = run_captured(lm, ids, [sae.cfg.hookpoint], bf16=False)[sae.cfg.hookpoint][:, 1:]
    return sae.encode(x.reshape(-1, D))


def dense_topk(pre, k):
    vals, idx = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter_(-1, idx, vals.relu())


@pytest.mark.parametrize("case", ["standard", "topk", "jumprelu", "no_b_dec_in", "pre6_topk"])
def test_saelens_encodings_match_reference(tmp_path, lm, case):
    t = raw_saelens(threshold=case == "jumprelu")
    cfg = {"standard": v6_cfg(), "topk": v6_cfg("topk", k=5), "jumprelu": v6_cfg("jumprelu"),
           "no_b_dec_in": v6_cfg() | {"apply_b_dec_to_input": False},
           "pre6_topk": {"d_in": D, "d_sae": S, "hook_point": "blocks.2.hook_resid_pre",
                         "model_name": "tiny-llama", "activation_fn_str": "topk",
                         "activation_fn_kwargs": {"k": 4}, "normalize_activations": False,
                         "sae_lens_training_version": "3.0.0"}}[case]
    cache = put_repo(tmp_path, "org/tiny-saes", {
        "sae/cfg.json": cfg, "sae/sae_weights.safetensors": st_bytes(t)})
    pset = load_pretrained("org/tiny-saes", "sae", lm=lm, cache_dir=cache)
    assert list(pset.saes) == ["layers.1"] and pset.warnings == () and pset.revision == REV
    ids, x = hidden(lm, 1)  # blocks.2.hook_resid_pre is block 1's output too
    x = x.reshape(-1, D)
    b_in = 0 if case == "no_b_dec_in" else t["b_dec"]
    pre = (x - b_in) @ t["W_enc"] + t["b_enc"]
    if case == "jumprelu":
        ref = pre.relu() * (pre > t["threshold"])
    else:
        ref = {"topk": dense_topk(pre, 5), "pre6_topk": dense_topk(pre, 4)}.get(case, pre.relu())
    sae = pset.saes["layers.1"]
    acts = ours(lm, ids, sae)
    torch.testing.assert_close(acts, ref, rtol=1e-5, atol=1e-5)
    assert (acts > 0).sum() > 0 and (acts == 0).sum() > 0
    torch.testing.assert_close(sae.decode(acts), ref @ t["W_dec"] + t["b_dec"],
                               rtol=1e-5, atol=1e-5)


def test_sparsify_module_outputs_with_run_config(tmp_path, lm):
    g = torch.Generator().manual_seed(1)
    files = {"config.json": {"model": "tiny-llama", "batch_size": 8}}
    raw = {}
    for h in ("layers.1", "layers.0.mlp"):
        raw[h] = {"encoder.weight": torch.randn(S, D, generator=g) / 4,
                  "encoder.bias": torch.randn(S, generator=g) / 2,
                  "W_dec": torch.randn(S, D, generator=g), "b_dec": torch.randn(D, generator=g)}
        files[f"{h}/cfg.json"] = {"activation": "topk", "expansion_factor": 2, "k": 6,
                                  "normalize_decoder": True, "num_latents": S,
                                  "multi_topk": False, "skip_connection": False, "d_in": D}
        files[f"{h}/sae.safetensors"] = st_bytes(raw[h])
    cache = put_repo(tmp_path, "EleutherAI/sae-tiny", files)
    pset = load_pretrained("EleutherAI/sae-tiny", "layers.1, layers.0.mlp", lm=lm,
                           cache_dir=cache)
    assert list(pset.saes) == ["layers.0.mlp", "layers.1"] and pset.warnings == ()
    assert {s.format for s in pset.sources.values()} == {"sparsify"}
    ids, x_BLD = hidden(lm, 1)  # sparsify `layers.1` = hidden_states[2]
    r = raw["layers.1"]
    ref = dense_topk(F.relu(F.linear(x_BLD.reshape(-1, D) - r["b_dec"], r["encoder.weight"],
                                     r["encoder.bias"])), 6)
    torch.testing.assert_close(ours(lm, ids, pset.saes["layers.1"]), ref, rtol=1e-5, atol=1e-5)
    # The MLP hookpoint reads block 0's MLP output: take it with a plain torch hook.
    captured = {}
    handle = lm.layers[0].mlp.register_forward_hook(lambda m, i, o: captured.setdefault("y", o))
    with torch.no_grad():
        lm.model(ids)
    handle.remove()
    r = raw["layers.0.mlp"]
    y = captured["y"][:, 1:].reshape(-1, D)
    ref = dense_topk(F.relu(F.linear(y - r["b_dec"], r["encoder.weight"], r["encoder.bias"])), 6)
    torch.testing.assert_close(ours(lm, ids, pset.saes["layers.0.mlp"]), ref,
                               rtol=1e-5, atol=1e-5)


def saelens_repo(tmp_path, repo="org/tiny-saes", folder="sae", cfg=None, tensors=None, **extra):
    files = {f"{folder}/cfg.json": cfg or v6_cfg(),
             f"{folder}/sae_weights.safetensors": st_bytes(tensors or raw_saelens())}
    return put_repo(tmp_path, repo, files | extra)


def test_model_check_warns_when_only_shapes_fit_and_fails_otherwise(tmp_path, lm):
    cache = saelens_repo(tmp_path, cfg=v6_cfg(model="gpt2-small"))
    pset = load_pretrained("org/tiny-saes", "sae", lm=lm, cache_dir=cache)
    assert len(pset.warnings) == 1 and "trained for gpt2-small, not tiny-llama" in pset.warnings[0]
    assert "only the weights' shape fits" in pset.warnings[0]
    wide = {k: v for k, v in raw_saelens().items()}
    wide["W_enc"], wide["W_dec"], wide["b_dec"] = (torch.zeros(48, S), torch.zeros(S, 48),
                                                   torch.zeros(48))
    cache = saelens_repo(tmp_path / "b", cfg=v6_cfg(model="gpt2-small") | {"d_in": 48},
                         tensors=wide)
    with pytest.raises(HubError, match=r"width 48 but tiny-llama has d_model=32.*gpt2-small"):
        load_pretrained("org/tiny-saes", "sae", lm=lm, cache_dir=cache)
    cache = saelens_repo(tmp_path / "c", cfg=v6_cfg(hook="blocks.7.hook_resid_post"))
    with pytest.raises(HubError, match="layer 7 out of range"):
        load_pretrained("org/tiny-saes", "sae", lm=lm, cache_dir=cache)


def test_hook_names_map_to_module_outputs():
    assert hookpoint_of("blocks.4.hook_resid_post") == "layers.4"
    assert hookpoint_of("blocks.4.hook_resid_pre") == "layers.3"
    assert hookpoint_of("blocks.4.hook_mlp_out") == "layers.4.mlp"
    assert hookpoint_of("layers.6.mlp") == "layers.6.mlp"
    assert hookpoint_of("model.layers.6") == "layers.6" == hookpoint_of("h.6")
    with pytest.raises(HubError, match="token embeddings"):
        hookpoint_of("blocks.0.hook_resid_pre")
    with pytest.raises(HubError, match="no hookpoint here"):
        hookpoint_of("blocks.3.attn.hook_z")


@pytest.mark.parametrize("bad, match", [
    ({"architecture": "gated"}, "unsupported architecture 'gated'"),
    ({"architecture": "topk"}, "topk SAE without k"),
    ({"normalize_activations": "layer_norm"}, "normalize_activations='layer_norm'"),
    ({"d_sae": 63}, "tensor 'W_enc' has shape \\(32, 64\\), the config says \\(32, 63\\)"),
    ({"metadata": {"hook_name": "blocks.0.hook_resid_pre"}}, "token embeddings"),
    ({"metadata": {"hook_name": "blocks.1.attn.hook_z", "hook_head_index": 3}}, "per-head"),
    ({"activation_fn": "tanh-relu"}, "activation 'tanh-relu'"),
])
def test_bad_configs_are_clear_errors(tmp_path, lm, bad, match):
    cache = saelens_repo(tmp_path, cfg=v6_cfg() | bad)
    with pytest.raises(HubError, match=match):
        load_pretrained("org/tiny-saes", "sae", lm=lm, cache_dir=cache)


def test_missing_repo_file_paths_and_corrupt_files(tmp_path, lm):
    with pytest.raises(HubError, match="'org/absent' is not in the local cache"):
        load_pretrained("org/absent", "sae", cache_dir=tmp_path)
    cache = put_repo(tmp_path, "org/no-weights", {"sae/cfg.json": v6_cfg()})
    with pytest.raises(HubError, match=r"'sae/sae_weights\.safetensors' of repository "
                                       r"'org/no-weights'"):
        load_pretrained("org/no-weights", "sae", cache_dir=cache)
    put_repo(tmp_path, "org/junk", {"sae/cfg.json": b"{not json",
                                    "w/cfg.json": v6_cfg(), "w/sae_weights.safetensors": b"xx"})
    with pytest.raises(HubError, match=r"org/junk/sae/cfg\.json is not valid JSON"):
        load_pretrained("org/junk", "sae", cache_dir=tmp_path)
    with pytest.raises(HubError, match="corrupt or truncated"):
        load_pretrained("org/junk", "w", cache_dir=tmp_path)
    for path in ("../models--org--junk/w", "/etc", "a/../../b"):
        with pytest.raises(HubError, match="points outside the repository"):
            load_pretrained("org/junk", path, cache_dir=tmp_path)
    with pytest.raises(HubError, match="neither a SAELens config"):
        put_repo(tmp_path, "org/other", {"x/cfg.json": {"foo": 1}})
        load_pretrained("org/other", "x", cache_dir=tmp_path)


def test_symlink_leaving_the_cache_is_rejected(tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(v6_cfg()))
    cache = tmp_path / "cache"
    snap = cache / "models--org--evil" / "snapshots" / REV / "sae"
    snap.mkdir(parents=True)
    (snap / "cfg.json").symlink_to(outside)
    (cache / "models--org--evil" / "refs").mkdir()
    (cache / "models--org--evil" / "refs" / "main").write_text(REV)
    with pytest.raises(HubError, match="outside the Hub cache"):
        load_pretrained("org/evil", "sae", cache_dir=cache)


@pytest.fixture
def stub_hub(monkeypatch):
    """A local stand-in for the Hub API answering 404s as huggingface.co does."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound" if "/nope/" in self.path
                             else "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        url + "/{repo_id}/resolve/{revision}/{filename}")
    yield
    server.shutdown()


def test_online_errors_name_the_repo_and_file(tmp_path, stub_hub):
    with pytest.raises(HubError, match="repository 'org/nope' was not found on the Hugging"):
        load_pretrained("org/nope", "layers.3", cache_dir=tmp_path)
    with pytest.raises(HubError, match=r"'layers\.3/cfg\.json' is missing from "
                                       r"repository 'org/yes'"):
        load_pretrained("org/yes", "layers.3", cache_dir=tmp_path)


def test_input_normalization_is_folded(tmp_path, lm):
    t = raw_saelens()
    cache = saelens_repo(tmp_path, cfg=v6_cfg(normalize_activations="expected_average_only_in"),
                         tensors=t)
    pset = load_pretrained("org/tiny-saes", "sae", lm=lm, cache_dir=cache)
    assert pset.needs_scale == ("layers.1",)
    pset = load_pretrained("org/tiny-saes", "sae", lm=lm, cache_dir=cache,
                           norm_scaling_factor=2.5)
    assert pset.needs_scale == ()
    x = torch.randn(20, D)
    pre = (2.5 * x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]  # trained on inputs scaled by 2.5
    sae = pset.saes["layers.1"]
    torch.testing.assert_close(sae.encode(x), pre.relu(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae(x).x_hat, (pre.relu() @ t["W_dec"] + t["b_dec"]) / 2.5,
                               rtol=1e-5, atol=1e-5)


def test_jumprelu_save_load_round_trip_is_bit_identical(tmp_path):
    sae = Sae(SaeConfig(d_in=D, d_sae=S, architecture="jumprelu", hookpoint="layers.2",
                        model_name="tiny-llama", apply_b_dec_to_input=False))
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_()
    sae.save(tmp_path)
    loaded = Sae.load(tmp_path)
    assert loaded.cfg == sae.cfg
    assert json.loads((tmp_path / "cfg.json").read_text())["architecture"] == "jumprelu"
    for (name, a), b in zip(sae.named_parameters(), loaded.parameters(), strict=True):
        assert torch.equal(a, b), name


def test_registry_releases_map_onto_hookpoints():
    for release in RELEASES.values():
        for sae_id in release.sae_ids:
            hookpoint_of(sae_id)
    smol = releases_for("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert [r.repo_id for r in smol] == ["EleutherAI/sae-SmolLM2-135M-64x"]
    assert RELEASES["gpt2-small-res-jb"].repo_id == "jbloom/GPT2-Small-SAEs-Reformatted"
    assert RELEASES["pythia-70m-deduped-res-sm"].path_of("blocks.3.hook_resid_post") == "3-res-sm"
    assert same_model("gpt2-small", "gpt2") and not same_model("gpt2", "")
    with pytest.raises(HubError, match="not in the local cache"):
        load_pretrained("pythia-70m-deduped-res-sm", "all", cache_dir="/nonexistent-cache")
    with pytest.raises(HubError, match=r"has no SAE 'blocks\.0\.hook_resid_pre'"):
        load_pretrained("gpt2-small-res-jb", "blocks.0.hook_resid_pre")


def two_layer_repo(tmp_path, model="tiny-llama"):
    files = {}
    for i, hook in enumerate(["blocks.0.hook_resid_post", "blocks.2.hook_resid_post"]):
        files[f"L{i}/cfg.json"] = v6_cfg("topk", hook=hook, model=model, k=4)
        files[f"L{i}/sae_weights.safetensors"] = st_bytes(raw_saelens(seed=i))
    return put_repo(tmp_path / "cache", "org/pair", files)


def test_pretrained_atlas_feeds_every_reader(tmp_path, tiny_atlas):
    corpus = json.loads((tiny_atlas / "atlas.json").read_text())["corpus"]
    cache, root = two_layer_repo(tmp_path), tmp_path / "atlas"
    reports = []
    out, warns = hub_atlas.load_pretrained_atlas(
        "org/pair", "L0,L1", model="tiny-llama", lm=session.model("tiny-llama"), name="pair", root=root,
        cache_dir=cache, corpus=corpus, seq_len=16, held_out=8, report=lambda m, f: reports.append(m))
    assert out == root / "pair" and is_built(out) and warns == ()
    assert sorted(p.name for p in root.iterdir()) == ["pair"]  # no temporary folder left
    assert any("fetching L1" in m for m in reports)
    loaded = session.open_atlas(out)
    info = loaded.info
    assert info["model"] == "tiny-llama" and info["hookpoints"] == ["layers.0", "layers.2"]
    assert info["source"]["repo_id"] == "org/pair" and info["source"]["revision"] == REV
    assert info["source"]["paths"] == {"layers.0": "L0", "layers.2": "L1"}
    assert all(m > 0 for m in loaded.medians.values())
    for h, m in loaded.metrics.items():
        assert m["fvu"] >= 0 and 0 < m["l0"] <= 4 and m["heldout_tokens"] > 0, h
        assert math.isfinite(m["ce_recovered"])
    # The saved SAEs are the Hub tensors, untouched.
    t = raw_saelens(seed=1)
    assert torch.equal(loaded.saes["layers.2"].W_enc, t["W_enc"])
    assert torch.equal(loaded.saes["layers.2"].b_dec, t["b_dec"])
    lmap = ensure_layer_map(out, lm=loaded.lm)
    assert lmap.hookpoints == ["layers.0", "layers.2"]
    index = ensure_feature_index(out, lm=loaded.lm)  # the Features tab's index
    assert index["source"]["heldout_windows"] == 8
    view = live_view(loaded, "the cat sat on the mat")  # the Live view tab
    assert view.hookpoints == ("layers.0", "layers.2")
    md, table, _ = saes_ui.atlas_summary(str(out))
    assert "org/pair" in md and table["hookpoint"].tolist() == ["layers.0", "layers.2"]
    assert str(out) in list_atlases(root)
    with pytest.raises(HubError, match="already exists"):
        hub_atlas.load_pretrained_atlas("org/pair", "L0", model="tiny-llama", name="pair",
                                        lm=session.model("tiny-llama"), root=root,
                                        cache_dir=cache)


def test_failures_leave_nothing_behind(tmp_path, tiny_atlas, monkeypatch):
    corpus = json.loads((tiny_atlas / "atlas.json").read_text())["corpus"]
    cache, root = two_layer_repo(tmp_path), tmp_path / "atlas"
    kw = dict(model="tiny-llama", lm=session.model("tiny-llama"), root=root, cache_dir=cache, corpus=corpus, seq_len=16,
              held_out=8)
    with pytest.raises(HubError, match=r"missing-folder/cfg\.json"):
        hub_atlas.load_pretrained_atlas("org/pair", "L0, missing-folder", name="a", **kw)

    def broken(*args, **kwargs):
        raise RuntimeError("evaluation failed")

    monkeypatch.setattr(hub_atlas, "evaluate_atlas", broken)
    with pytest.raises(RuntimeError, match="evaluation failed"):
        hub_atlas.load_pretrained_atlas("org/pair", "L0", name="b", **kw)
    assert not root.exists() or list(root.iterdir()) == []


def test_export_round_trip_is_bit_identical(tmp_path, tiny_atlas):
    out = hub_export.export_saelens(tiny_atlas, tmp_path / "export", repo_id="me/tiny-saes")
    info, metrics, saes = load_atlas(tiny_atlas)
    card = (out / "README.md").read_text()
    assert "library_name: saelens" in card and "tiny-llama" in card
    assert 'SAE.from_pretrained("me/tiny-saes", "layers.0")' in card
    for h, sae in saes.items():
        row = next(line for line in card.splitlines() if line.startswith(f"| `{h}`"))
        assert f"| {sae.cfg.d_sae} | {sae.cfg.k} | {metrics[h]['fvu']:.4f} |" in row
    assert f"{info['lm_tokens']:,} tokens" in card
    files = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert set(files) == {"README.md"} | {f"{h}/{f}" for h in saes
                                          for f in ("cfg.json", "sae_weights.safetensors")}
    cache = put_repo(tmp_path / "cache", "me/tiny-saes", files)
    pset = load_pretrained("me/tiny-saes", list(saes), lm=session.model("tiny-llama"),
                           cache_dir=cache)
    assert pset.warnings == () and list(pset.saes) == list(saes)
    for h, sae in saes.items():
        back = pset.saes[h]
        assert back.cfg == sae.cfg
        for (name, a), b in zip(sae.named_parameters(), back.parameters(), strict=True):
            assert torch.equal(a, b), (h, name)
    with pytest.raises(HubError, match="not empty"):
        hub_export.export_saelens(tiny_atlas, out)


def test_push_needs_a_token_and_uploads_the_folder(tmp_path, tiny_atlas, monkeypatch):
    out = hub_export.export_saelens(tiny_atlas, tmp_path / "export")
    monkeypatch.setattr(hub_export, "get_token", lambda: None)
    with pytest.raises(HubError, match="no Hugging Face token is configured"):
        hub_export.push_to_hub(out, "me/tiny-saes")
    with pytest.raises(HubError, match="not an exported SAE set"):
        hub_export.push_to_hub(tmp_path, "me/tiny-saes", token="t")
    calls = []

    class FakeApi:  # records what would be sent; nothing leaves the machine
        def __init__(self, token):
            calls.append(("token", token))

        def create_repo(self, repo_id, **kw):
            calls.append(("create", repo_id, kw))

        def upload_folder(self, **kw):
            calls.append(("upload", kw))
            return type("Commit", (), {"commit_url": "https://hub/commit/1"})()

    monkeypatch.setattr(hub_export, "HfApi", FakeApi)
    assert hub_export.push_to_hub(out, "me/tiny-saes", token="secret") == "https://hub/commit/1"
    assert calls[0] == ("token", "secret") and calls[1][1] == "me/tiny-saes"
    assert calls[2][1]["folder_path"] == out and calls[2][1]["repo_id"] == "me/tiny-saes"


def test_saes_tab_loads_from_the_hub_and_exports(tmp_path, tiny_atlas, monkeypatch):
    import gradio as gr

    cache = two_layer_repo(tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)  # checkpoints/ (atlas and export roots) land in tmp_path
    source, ids, model, note = saes_ui.release_fields("gpt2-small-res-jb")
    assert (source, ids, model) == ("gpt2-small-res-jb", "all", "gpt2") and "center" in note
    with pytest.raises(gr.Error, match="'org/absent' is not in the local cache"):
        saes_ui.hub_load("org/absent", "L0", "tiny-llama", "", None, progress=lambda *a, **k: 0)
    assert not (tmp_path / "checkpoints" / "atlas").exists() or not any(
        (tmp_path / "checkpoints" / "atlas").iterdir())
    picker, status, sets = saes_ui.hub_load("org/pair", "L1", "tiny-llama", "one",
                                            str(tiny_atlas), progress=lambda *a, **k: 0)
    new = "checkpoints/atlas/one"
    assert picker.value == new and [v for _, v in picker.choices] == sorted([str(tiny_atlas), new])
    assert "1 SAEs" in status and sets["SAE set"].tolist() == [new]
    assert sets["from"].tolist() == ["org/pair"]
    saes_ui.hub_load("org/pair", "L0", "tiny-llama", "", None, progress=lambda *a, **k: 0)
    picker, status, _ = saes_ui.hub_load("org/pair", "L0", "tiny-llama", "", None,
                                         progress=lambda *a, **k: 0)
    assert "already loaded" in status and picker.value.startswith("checkpoints/atlas/hub-org--pair")
    msg = saes_ui.export_set(new, "", "me/one")
    assert "checkpoints/export/one" in msg and (tmp_path / "checkpoints/export/one/README.md"
                                                ).exists()
    with pytest.raises(gr.Error, match="not empty"):
        saes_ui.export_set(new, "", "me/one")
    monkeypatch.setattr(hub_export, "get_token", lambda: None)
    with pytest.raises(gr.Error, match="no Hugging Face token"):
        saes_ui.push_set(new, "", "me/one")


@needs_chromium
def test_hub_load_in_the_browser_selects_the_new_set(tmp_path, tiny_atlas, monkeypatch):
    """Type a repo, load it, and see the picker and summary switch to the new set."""
    import app

    cache = two_layer_repo(tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    with served(app.build_app(tiny_atlas)) as url, browser_page(url) as page:
        page.get_by_role("tab", name="SAEs").click()
        page.get_by_label("Release or Hub repo id").fill("org/pair")
        page.get_by_label("SAE ids or folders").fill("L0, L1")
        page.get_by_label("Model to run them on").fill("tiny-llama")
        page.get_by_label("Name of the new set").fill("pair")
        page.get_by_role("button", name="Load from the Hub").click()
        page.get_by_text("it is now the active set").wait_for(timeout=60_000)
        page.get_by_text("loaded from org/pair").wait_for(timeout=15_000)  # the summary
        assert page.get_by_label("SAE set").first.input_value() == "checkpoints/atlas/pair"
        page.get_by_label("Name of the new set").fill("pair")
        page.get_by_role("button", name="Load from the Hub").click()
        page.get_by_text("already exists").first.wait_for(timeout=30_000)
