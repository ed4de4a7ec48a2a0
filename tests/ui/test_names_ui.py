"""Feature names in the app's tabs and API, with names planted on a copy of the tiny atlas:
every layer-1 feature is "'cat'" with F1 0.85, every layer-0 feature "'dog'" with F1 0.1 (a
weak fit); and the same tabs on a copy without names."""

import shutil
from pathlib import Path

import pytest
import torch

from sae_core.atlas.layout import NAMES_FILE
from sae_core.explore.feature_index import ensure_feature_index
from sae_core.explore.names import FeatureNames
from ui.serving import session

CAT, DOG = 4, 9  # token ids in the tiny tokenizer
PLANTED = {"layers.0": (DOG, 0.1), "layers.1": (CAT, 0.85)}


def plant_names(folder: Path) -> None:
    loaded = session.open_atlas(folder)
    layers = {}
    for h, sae in loaded.saes.items():
        n = sae.cfg.d_sae
        tok, f1 = PLANTED.get(h, (-1, 0.0))
        tokens = torch.full((n, 3), -1, dtype=torch.long)
        tokens[:, 0] = tok
        layers[h] = {"tokens": tokens, "task": torch.full((n,), -1),
                     "label": torch.full((n,), -1), "promotes": torch.full((n, 3), -1),
                     "rule": torch.full((n,), int(tok >= 0)),
                     "scores": torch.full((n, 3), f1), "support": torch.full((n,), 5)}
    names = FeatureNames(loaded.hookpoints, ["pos"], {"pos": ["NOUN"]},
                         {CAT: "cat", DOG: "dog"}, layers, (10, 10), loaded.fingerprint)
    names.save(folder / NAMES_FILE)


@pytest.fixture(scope="module")
def atlases(tiny_atlas, tmp_path_factory):
    """(a copy with names and a feature index, a copy with the index and no names)."""
    root = tmp_path_factory.mktemp("names_ui")
    ensure_feature_index(tiny_atlas, lm=session.open_atlas(tiny_atlas).lm)
    named, plain = root / "named", root / "plain"
    for folder in (named, plain):
        shutil.copytree(tiny_atlas, folder, ignore=shutil.ignore_patterns(NAMES_FILE,
                                                                          "names.json"))
    plant_names(named)
    return str(named), str(plain)


def test_the_feature_page_shows_the_name_its_scores_and_a_weak_mark(atlases):
    from ui.features import tab

    named, plain = atlases
    summary = tab.page_outputs(named, 1, 3)[0]
    assert "<code>&#x27;cat&#x27;</code>" in summary and "F1 0.85" in summary
    assert "weak fit" not in summary
    assert "weak fit" in tab.page_outputs(named, 0, 3)[0]
    assert "Name" not in tab.page_outputs(plain, 1, 3)[0]  # no names: the page as before


def test_what_it_does_when_pushed(atlases):
    from ui.features import tab

    table = tab.pushed_outputs(atlases[1], 1, 3)
    assert list(table.columns) == ["token", "rise (pts %)", "clean %", "pushed %"]
    assert len(table) == 10 and table["rise (pts %)"].is_monotonic_decreasing
    with pytest.raises(ValueError, match="feature"):
        tab.pushed_outputs(atlases[1], 1, 10_000)


def test_the_live_view_lists_names_only_when_there_are_some(atlases):
    from ui.live import tab as live

    named, plain = atlases
    table = live.run_live(named, "the cat sat on the mat")[3]
    at_1 = table[table["layer"] == 1]
    assert (at_1["name"] == "'cat' (F1 0.85)").all() and len(at_1) > 0
    assert (table[table["layer"] == 0]["name"] == "'dog' ? (F1 0.10)").all()
    assert "name" not in live.run_live(plain, "the cat sat on the mat")[3].columns


def test_search_by_name_and_names_in_text_hits(atlases):
    from ui.search import tab as search

    named, plain = atlases
    table, status = search.run_name_search(named, "cat")
    d_sae = session.open_atlas(named).saes["layers.1"].cfg.d_sae
    assert len(table) == d_sae and set(table["layer"]) == {1} and status.startswith(str(d_sae))
    weak, _ = search.run_name_search(named, "'dog'")
    assert set(weak["weak"]) == {"? weak fit"}
    assert search.run_name_search(plain, "cat")[1] == "*This SAE set has no feature names yet.*"
    assert search.run_name_search(named, "  ")[0].empty  # run_search reports the empty text
    hits, _ = search.run_search(named, "the cat sat")
    expected = {0: "'dog' ? (F1 0.10)", 1: "'cat' (F1 0.85)", 2: "unnamed"}
    assert (hits["name"] == hits["layer"].map(expected)).all()
    assert "name" not in search.run_search(plain, "the cat sat")[0].columns


def test_steering_shows_the_chosen_features_name(atlases):
    from ui.steering.tab import feature_name_line

    named, plain = atlases
    assert feature_name_line(named, 1, 3) == ("Feature name: <code>&#x27;cat&#x27; "
                                              "(F1 0.85)</code>")
    assert feature_name_line(plain, 1, 3) == feature_name_line(named, 9, 3) == ""
    assert feature_name_line(named, "x", None) == ""


def test_the_api_returns_names(atlases):
    from ui.api import AtlasApi

    named, plain = atlases
    api = AtlasApi(lambda: [named, plain], named)
    page = api.feature_page("named", 1, 3)
    assert page["name"]["text"] == "'cat'" and page["name"]["f1"] == pytest.approx(0.85)
    assert api.feature_page("plain", 1, 3)["name"] is None
    out = api.features_on_text("named", "the cat sat", 2)
    feats = [f for tok in out["tokens"] for lay in tok["layers"] if lay["layer"] == 1
             for f in lay["features"]]
    assert feats and all(f["name"] == "'cat' (F1 0.85)" for f in feats)
