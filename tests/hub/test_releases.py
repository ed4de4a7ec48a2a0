"""Which releases load and why not: the verdict, the CLI's counts, Neuronpedia links, and
the script that builds the table."""

import json
from collections import Counter

import pytest

from sae_core.__main__ import main
from sae_core.hub.fetch import HubError
from sae_core.hub.formats import CONVERTERS
from sae_core.hub.hook_names import hook_of
from sae_core.hub.registry import TABLE_FILE, Release, SaeEntry, read_table
from sae_core.hub.releases import (
    neuronpedia_id_of,
    neuronpedia_url,
    sae_verdict,
    summarise,
    verdict,
)
from scripts.release_table import build_table, dumps

OURS = ("saelens", "sparsify")


def release(layout="saelens", hooks=("blocks.3.hook_resid_post",), path="", saes=(), **kw):
    saes = saes or tuple(SaeEntry(f"sae{i}", path or f"sae{i}", h) for i, h in enumerate(hooks))
    return Release("planted", "org/planted", "gpt2", layout, saes, **kw)


@pytest.mark.parametrize("planted, reason", [
    (release(), ""),
    (release("sparsify", ("layers.4.mlp",)), ""),
    (release("gemma_2"), "layout gemma_2: no converter yet"),
    (release("mntss_clt_layer_transcoder"), "cross-layer transcoder: refused"),
    (release(path="clt/layer_3"), "cross-layer transcoder: refused"),
    (release(config_overrides={"normalize_activations": "constant_norm_rescale"}),
     "normalisation constant_norm_rescale not supported"),
    (release(config_overrides={"normalize_activations": "expected_average_only_in"}), ""),
    (release(hooks=("blocks.7.attn.hook_z",)), ""),
    (release(hooks=("blocks.7.hook_resid_mid",)), ""),
    (release(hooks=("blocks.7.attn.hook_q",)), "hook blocks.N.attn.hook_q has no hookpoint"),
    (release(saes=(SaeEntry("t", "transcoder/layer_7", "blocks.7.hook_mlp_in",
                            "blocks.7.hook_mlp_out"),)), ""),  # Gemma Scope 2's transcoders
    (release(saes=(SaeEntry("t", "layer_7.safetensors", "blocks.7.mlp.hook_in",
                            "blocks.7.hook_mlp_out"),)), ""),  # mwhanna's
    (release(saes=(SaeEntry("t", "t", "blocks.7.hook_mlp_in", "blocks.8.hook_mlp_out"),)),
     "hook blocks.N.hook_mlp_in -> blocks.N.hook_mlp_out has no hookpoint"),
    (release(hooks=("blocks.0.hook_resid_pre",)), "hook blocks.N.hook_resid_pre has no"),
    (release(hooks=("hook_embed",)), "hook hook_embed has no hookpoint here"),
    (release(hooks=("",)), "the table names no hook"),
])
def test_the_verdict_gives_the_documented_reason(planted, reason):
    got = sae_verdict(planted, planted.saes[0], OURS)
    assert got.startswith(reason) and bool(got) == bool(reason)
    v = verdict(planted, OURS)
    assert v.ok == (not reason) and v.reason == got


def test_a_release_loads_when_any_of_its_saes_does():
    mixed = release(hooks=("blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"))
    v = verdict(mixed, OURS)
    assert v.ok and v.supported == ("sae1",) and list(v.refused) == ["sae0"] and v.reason == ""


def _count_by_hand(layouts) -> tuple[int, int]:
    """Loadable releases and SAE ids, from the JSON file itself (not the registry)."""
    raw = json.loads(TABLE_FILE.read_text())
    ok_releases = ok_saes = 0
    for entry in raw["releases"].values():
        norm = (entry.get("config_overrides") or {}).get("normalize_activations")
        n = 0
        for row in entry["saes"]:
            path = row[1] or entry.get("path_prefix", "") + row[0]
            try:
                hook_of(row[2], row[3] if len(row) > 3 else "")
            except HubError:
                continue
            n += (entry["layout"] in layouts and norm in (None, "expected_average_only_in")
                  and entry["layout"] != "mntss_clt_layer_transcoder"
                  and not path.startswith("clt/"))
        ok_releases, ok_saes = ok_releases + (n > 0), ok_saes + n
    return ok_releases, ok_saes


def test_the_cli_prints_the_counts(capsys):
    assert main(["releases", "--unsupported"]) == 0
    out = capsys.readouterr().out
    ok_releases, ok_saes = _count_by_hand(tuple(CONVERTERS))
    assert f"releases: {ok_releases} of 171 loadable" in out
    assert f"SAE ids: {ok_saes:,} of 13,887 loadable" in out
    if ok_releases < 171:
        assert "releases none of whose SAEs load, by reason:" in out


def test_today_with_saelens_and_sparsify_alone():
    s = summarise(read_table().values(), OURS)
    assert (s.ok_releases, s.ok_saes) == _count_by_hand(OURS)
    assert s.refused_saes["layout gemma_3: no converter yet"] == 8_784
    assert s.refused_saes["layout gemma_2: no converter yet"] == 2_833
    assert sum(len(v) for v in s.refused_releases.values()) == s.releases - s.ok_releases


def test_neuronpedia_links():
    assert neuronpedia_url("gpt2-small/0-res-jb", 694) == \
        "https://www.neuronpedia.org/gpt2-small/0-res-jb/694"
    source = {"release": "gpt2-small-res-jb", "paths": {"layers.0": "blocks.1.hook_resid_pre"}}
    assert neuronpedia_id_of(source, "layers.0") == "gpt2-small/1-res-jb"
    assert neuronpedia_id_of(source, "layers.5") == ""
    assert neuronpedia_id_of({"release": None, "paths": {}}, "layers.0") == ""
    assert neuronpedia_id_of(None, "layers.0") == ""


PLANTED_YAML = {
    "tiny-res": {"conversion_func": None, "model": "gpt2-small", "repo_id": "org/tiny",
                 "config_overrides": {"model_from_pretrained_kwargs":
                                      {"center_writing_weights": True}},
                 "saes": [{"id": "blocks.1.hook_resid_pre_768",
                           "path": "a/blocks.1.hook_resid_pre_768",
                           "neuronpedia": "gpt2-small/1-tiny", "l0": 12.34}]},
    "tiny-scope": {"conversion_func": "gemma_3", "model": "google/gemma-3-270m",
                   "repo_id": "google/gemma-scope-2-270m-pt",
                   "saes": [{"id": f"layer_{i}_width_16k_l0_big",
                             "path": f"mlp_out_all/layer_{i}_width_16k_l0_big"} for i in (0, 5)]},
    "tiny-llama": {"conversion_func": "llama_scope", "model": "meta-llama/Llama-3.1-8B",
                   "repo_id": "fnlp/Llama3_1-8B-Base-LXA-8x",
                   "saes": [{"id": "l2a_8x", "path": "Llama3_1-8B-Base-L2A-8x",
                             "norm_scaling_factor": 2.5}]},
}


def test_the_script_builds_a_table_the_registry_reads(tmp_path):
    table = build_table(PLANTED_YAML)
    (tmp_path / "t.json").write_text(dumps(table, "planted"))
    got = read_table(tmp_path / "t.json")
    assert list(got) == [*PLANTED_YAML, "EleutherAI/sae-SmolLM2-135M-64x"]
    res = got["tiny-res"]
    assert (res.model, res.format, res.saes[0]) == ("gpt2", "saelens", SaeEntry(
        "blocks.1.hook_resid_pre_768", "a/blocks.1.hook_resid_pre_768",
        "blocks.1.hook_resid_pre", neuronpedia="gpt2-small/1-tiny", l0=12.3))
    assert "center_writing_weights" in res.note
    scope = got["tiny-scope"]
    assert [(s.path, s.hook) for s in scope.saes] == [
        ("mlp_out_all/layer_0_width_16k_l0_big", "blocks.0.hook_mlp_out"),
        ("mlp_out_all/layer_5_width_16k_l0_big", "blocks.5.hook_mlp_out")]
    assert table["tiny-scope"]["path_prefix"] == "mlp_out_all/"
    assert got["tiny-llama"].saes[0].hook == "blocks.2.hook_attn_out"
    assert got["tiny-llama"].norm_scales == {"l2a_8x": 2.5}
    assert Counter(len(line) < 200 for line in dumps(table, "x").splitlines())[False] <= 4
