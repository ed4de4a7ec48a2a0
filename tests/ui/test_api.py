"""The named API endpoints of the running app (gradio_client) over the tiny atlas, and the
same endpoints as MCP tools."""

import httpx
import pytest
from gradio_client.exceptions import AppError

from sae_core.explore.feature_page import feature_page
from sae_core.explore.layermap import read_layer_map
from sae_core.explore.live import live_view
from sae_core.steer.edits import FeatureSteer, Steering
from sae_core.steer.finder import find_steering
from sae_core.steer.generation import GenConfig, side_by_side
from tests.ui.bad_input_helpers import serve
from ui import api


@pytest.fixture(scope="module")
def served(tiny_atlas):
    """(client, base URL, the loaded atlas) of the app served with its MCP server."""
    yield from serve(tiny_atlas, mcp_server=True)


def test_list_atlases(served, tiny_atlas):
    client, _, _ = served
    got = client.predict(api_name="/list_atlases")  # first the app's own, then any built here
    assert got[0] == {"name": tiny_atlas.name, "model": "tiny-llama", "layers": [0, 1, 2],
                      "saes": [{"hookpoint": f"layers.{i}", "layer": str(i)} for i in range(3)]}


def test_list_releases(served):
    """The Hub's releases with the app's verdict, as plain data; one release lists its SAEs."""
    from sae_core.hub.registry import RELEASES

    client, _, _ = served
    got = client.predict(api_name="/list_releases")
    assert [r["release"] for r in got] == list(RELEASES)
    jb = next(r for r in got if r["release"] == "gpt2-small-res-jb")
    assert (jb["repo_id"], jb["layout"], jb["saes"], jb["loadable_saes"], jb["loadable"]) == (
        "jbloom/GPT2-Small-SAEs-Reformatted", "saelens", 13, 12, True) and jb["neuronpedia"]
    one = client.predict(model="", release="gpt2-small-res-jb", api_name="/list_releases")
    embed = one[0]["sae_list"][0]
    assert (embed["id"], embed["loadable"], embed["neuronpedia"]) == (
        "blocks.0.hook_resid_pre", False, "gpt2-small/0-res-jb") and "hookpoint" in embed["why_not"]
    assert {r["release"] for r in client.predict(model="gpt2", api_name="/list_releases")} == {
        n for n, r in RELEASES.items() if r.model == "gpt2"}
    with pytest.raises(AppError, match="Unknown release"):
        client.predict(release="no-such", api_name="/list_releases")


def test_feature_page_is_the_librarys(served):
    client, _, loaded = served
    got = client.predict(atlas="", layer=1, feature=5, api_name="/feature_page")
    page = feature_page(loaded, "layers.1", 5)
    assert got["feature"] == 5 and got["hookpoint"] == "layers.1"
    assert got["firings"] == page.n_fire and got["density"] == pytest.approx(page.density)
    assert [p["token"] for p in got["promotes"]] == [t for t, _ in page.promoted]
    assert [s["text"] for s in got["top_snippets"]] == ["".join(s.pieces) for s in page.top]
    assert [lab["label"] for lab in got["labels"]] == [lab.label for lab in page.labels]
    by_name = client.predict(atlas=loaded.folder.name, layer=1, feature=5,
                             api_name="/feature_page")
    assert by_name == got


def test_features_on_text_are_the_live_views(served):
    client, _, loaded = served
    text = "the cat sat on the mat . Paris is big"
    got = client.predict(atlas="", text=text, top=2, api_name="/features_on_text")
    view = live_view(loaded, text, max_tokens=api.MAX_TEXT_TOKENS, top=2)
    assert [t["token"] for t in got["tokens"]] == list(view.pieces)
    assert got["layers"] == [0, 1, 2]
    for t, token in enumerate(got["tokens"]):
        for entry in token["layers"]:
            j = entry["layer"]
            ids = [f["feature"] for f in entry["features"]]
            assert ids == [f for f in view.top_idx_TLK[t, j].tolist() if f >= 0]
        assert token["skipped_layers"] == [j for j in range(3) if view.flagged_TL[t, j]]


def test_steer_text_is_side_by_side(served):
    client, _, loaded = served
    got = client.predict(atlas="", prompt="the cat sat", layer=2, feature=3, strength=2.0,
                         max_new_tokens=8, api_name="/steer_text")
    direct = side_by_side(loaded, "the cat sat",
                          Steering((FeatureSteer("layers.2", 3, 2.0),)),
                          GenConfig(max_new_tokens=8))
    assert (got["unsteered"], got["steered"]) == (direct.unsteered, direct.steered)
    assert got["typical_norm"] == pytest.approx(direct.norms["layers.2"])


def test_find_steering_is_the_finders(served):
    client, _, loaded = served
    got = client.predict(atlas="", concept="Paris", related_words="big",
                         api_name="/find_steering")
    direct = find_steering(loaded, "Paris", "big")
    assert got["words"] == ["Paris", "big"]
    assert [(c["layer"], c["feature"]) for c in got["candidates"]] == [
        (c.layer, c.feature) for c in direct.candidates[:api.MAX_CANDIDATES]]
    reach = [c["reach"] for c in got["candidates"]]
    assert reach == sorted(reach, reverse=True)
    if direct.best is None:
        assert got["suggestion"] is None
    else:
        assert got["suggestion"]["strength"] == direct.best.strength
        assert [(x["layer"], x["feature"]) for x in got["suggestion"]["features"]] == [
            (c.layer, c.feature) for c in direct.best.parts]


def test_layer_map_is_the_heatmap(served):
    client, _, loaded = served
    got = client.predict(atlas="", task="pos", threshold=0.3, min_support=1, min_lift=0.0,
                         api_name="/layer_map")
    lmap = read_layer_map(loaded.folder)
    ids = [lmap.vocab["pos"].index(name) for name in got["labels"]]
    assert got["counts"] == lmap.heatmap("pos", 0.3, 1, "sae", 0.0)[:, ids].tolist()
    assert sum(map(sum, got["counts"])) > 0
    assert got["accepted_share"]["SAE features"] == lmap.accept_share("pos", 0.3, 1, "sae")


BAD_CALLS = [
    ("/feature_page", {"atlas": "/etc", "layer": 1, "feature": 0}, "Unknown SAE set"),
    ("/feature_page", {"atlas": "../tiny", "layer": 1, "feature": 0}, "Unknown SAE set"),
    ("/feature_page", {"atlas": "", "layer": 9, "feature": 0}, "layer 9"),
    ("/feature_page", {"atlas": "", "layer": 1, "feature": 64}, "0 to 63"),
    ("/feature_page", {"atlas": "", "layer": 1, "feature": 1.5}, "whole number"),
    ("/features_on_text", {"atlas": "", "text": "a" * 2001}, "limit is 2,000"),
    ("/features_on_text", {"atlas": "", "text": "   "}, "non-empty"),
    ("/features_on_text", {"atlas": "", "text": "the cat", "top": 99}, "top must be"),
    ("/steer_text", {"atlas": "", "prompt": "the", "layer": 1, "feature": 0,
                     "max_new_tokens": 1000}, "max_new_tokens must be"),
    ("/steer_text", {"atlas": "", "prompt": "the", "layer": 1, "feature": 99}, "0..63"),
    ("/steer_text", {"atlas": "", "prompt": "the", "layer": 1, "feature": 0,
                     "strength": 1e9}, "strength must be"),
    ("/find_steering", {"atlas": "", "concept": "  "}, "non-empty"),
    ("/find_steering", {"atlas": "", "concept": "cat", "related_words": "x" * 50},
     "under 40 characters"),
    ("/layer_map", {"atlas": "", "task": "colour"}, "task must be one of"),
    ("/layer_map", {"atlas": "", "threshold": 2}, "threshold must be"),
]


@pytest.mark.parametrize(("endpoint", "kwargs", "message"), BAD_CALLS)
def test_bad_input_is_a_clear_error(served, endpoint, kwargs, message):
    client, _, _ = served
    with pytest.raises(AppError, match=message):
        client.predict(**kwargs, api_name=endpoint)


def test_a_path_to_another_atlas_is_refused(served, tiny_atlas, tmp_path):
    """A built atlas that the app does not list is refused, by path or by name."""
    client, _, _ = served
    other = tmp_path / "elsewhere"
    other.mkdir()
    for name in ("atlas.json", "metrics.json"):
        (other / name).write_bytes((tiny_atlas / name).read_bytes())
    for atlas in (str(other), "elsewhere", str(tiny_atlas.parent)):
        with pytest.raises(AppError, match="Unknown SAE set"):
            client.predict(atlas=atlas, api_name="/layer_map")


def test_the_endpoints_are_the_mcp_tools(served):
    _, base, _ = served
    schema = httpx.get(f"{base}/gradio_api/mcp/schema", timeout=30).json()
    tools = {tool["name"]: tool for tool in schema}
    assert set(tools) == set(api.ENDPOINTS)  # the tabs' own callbacks are not tools
    steer = tools["steer_text"]
    assert "steered" in steer["description"]
    props = steer["inputSchema"]["properties"]
    # a layer number, or a site's key such as "3 (MLP out)" (ui/shared/sites.py)
    assert {t["type"] for t in props["layer"]["anyOf"]} == {"integer", "string"}
    assert props["strength"]["type"] == "number"
    assert "list_atlases" in props["atlas"]["description"]
    info = httpx.get(f"{base}/gradio_api/info", timeout=30).json()
    assert set(info["named_endpoints"]) == {f"/{name}" for name in api.ENDPOINTS}


def test_an_mcp_client_calls_a_tool(served, tiny_atlas):
    """The MCP protocol end to end (streamable HTTP): list the tools, call one."""
    import ast
    import asyncio

    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    _, base, _ = served

    async def session_calls():
        async with streamable_http_client(f"{base}/gradio_api/mcp/") as (read, write, _), \
                ClientSession(read, write) as mcp:
            await mcp.initialize()
            tools = await mcp.list_tools()
            result = await mcp.call_tool("feature_page", {"atlas": "", "layer": 2, "feature": 3})
            bad = await mcp.call_tool("layer_map", {"atlas": "/etc"})
            return tools, result, bad

    tools, result, bad = asyncio.run(session_calls())
    assert {t.name for t in tools.tools} == set(api.ENDPOINTS)
    page = ast.literal_eval(result.content[0].text)  # Gradio writes str(dict), not JSON
    assert (page["atlas"], page["layer"], page["feature"]) == (tiny_atlas.name, 2, 3)
    assert bad.isError and "Unknown SAE set" in bad.content[0].text
