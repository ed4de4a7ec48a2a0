"""Presets as concepts: resolved on the tiny atlas by a steering check, stored with a
fingerprint, stale when the SAEs or the concepts change."""

import json
import os
import threading

import pytest
from safetensors.torch import load_file, save_file

from sae_core.atlas.layout import current_fingerprint
from sae_core.sae import WEIGHTS_FILE
from sae_core.steer import presets
from sae_core.steer.edits import FeatureSteer
from sae_core.steer.generation import GenConfig, side_by_side
from sae_core.steer.presets import (
    CONCEPTS_FILE,
    PRESET_MODE,
    PresetConcept,
    PresetError,
    count_mentions,
    ensure_presets,
    load_concepts,
    read_presets,
    resolve_presets,
)
from tests.steer.common import _n_hooks
from tests.steer.preset_helpers import (  # noqa: F401 (tiny_search: a fixture)
    CONCEPTS,
    FEATURE,
    HOOK,
    planted_copy,
    tiny_search,
)

pytestmark = pytest.mark.usefixtures("tiny_search")


@pytest.fixture
def atlas(tiny_atlas, loaded, tmp_path):
    return planted_copy(tiny_atlas, loaded.lm, tmp_path)


def _count(text: str, words) -> int:
    """Mentions counted another way: the tiny model's words are separated by spaces."""
    return sum(w.lower() in {x.lower() for x in words} for w in text.split())


def test_the_shipped_concepts_name_no_feature_numbers():
    items = json.loads(CONCEPTS_FILE.read_text())["presets"]
    assert all("layer" not in p and "feature" not in p for p in items)
    loaded = load_concepts()
    assert [c.slug for c in loaded] == ["ocean", "space", "jazz", "french", "money", "family"]
    assert all(c.concept and len(c.concept_words) >= 8 for c in loaded)


@pytest.mark.parametrize("change, match", [
    ({"layer": 11}, "unknown fields"), ({"slug": "Ocean!"}, "slug"),
    ({"strength": 50.0}, "strength must be a number from -20 to 20"), ({"mode": "push"}, "mode"),
    ({"concept_words": []}, "concept_words"), ({"max_new_tokens": 0}, "max new tokens"),
    ({"concept": ""}, "concept")])
def test_bad_concepts_are_clear_errors(tmp_path, change, match):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"presets": [CONCEPTS[0] | change]}))
    with pytest.raises(PresetError, match=match):
        load_concepts(path)
    path.write_text(json.dumps({"presets": [CONCEPTS[0], CONCEPTS[0]]}))
    with pytest.raises(PresetError, match="unique"):
        load_concepts(path)
    path.write_text(json.dumps({"presets": [{k: v for k, v in CONCEPTS[0].items()
                                             if k != "prompt"}]}))
    with pytest.raises(PresetError, match="prompt"):
        load_concepts(path)


def test_mentions_are_whole_words_in_any_case():
    assert count_mentions("Sea, seas and the SEA; seaside", ["sea", "seas"]) == 3
    assert count_mentions("no match", ["ocean"]) == 0


def _steering(entry_features) -> tuple[FeatureSteer, ...]:
    """A presets.json recipe as the app runs it: clamped (the concepts set no mode)."""
    return tuple(FeatureSteer(f["hookpoint"], f["feature"], f["strength"], PRESET_MODE)
                 for f in entry_features)


def test_resolve_keeps_the_finders_first_option_that_names_the_concept(atlas, monkeypatch):
    loaded, path = atlas
    calls = []
    real = presets.generate
    monkeypatch.setattr(presets, "generate",
                        lambda *a, **k: calls.append(len(a[4])) or real(*a, **k))
    result = resolve_presets(loaded, load_concepts(path), candidates=6)
    # one batch per (prompt, length): the first three share theirs and one unsteered row
    assert calls == [1 + sum(len(e["candidates"]) for e in result["presets"][:3]),
                     1 + len(result["presets"][3]["candidates"])]
    by_slug = {e["slug"]: e for e in result["presets"]}
    never = by_slug["never"]  # the tiny model never writes "ocean", a word it lacks
    assert never["status"] == "failed" and never["candidates"]
    assert never["reason"].startswith("no option named the concept")
    for c in load_concepts(path):
        e = by_slug[c.slug]
        gen = GenConfig(max_new_tokens=c.max_new_tokens, temperature=0.0)
        counts = []
        for cand in e["candidates"]:  # each option alone, in the app's two-row batch
            out = side_by_side(loaded, c.prompt, c.steering(_steering(cand["features"])), gen)
            assert out.steered == cand["text"] and out.unsteered == e["unsteered_text"]
            counts.append(_count(out.steered, c.concept_words))
        assert [cand["mentions"] for cand in e["candidates"]] == counts
        plain = _count(e["unsteered_text"], c.concept_words)
        passing = [i for i, n in enumerate(counts) if n > plain]
        kept = passing[0] if passing else 0
        assert e["features"] == e["candidates"][kept]["features"]
        assert e["mentions"] == {"steered": counts[kept], "unsteered": plain}
        assert e["status"] == ("ok" if passing else "failed")
    paris = by_slug["paris"]  # the planted feature is among the recipes checked
    assert paris["status"] == "ok" and paris["mentions"]["steered"] >= 4
    assert (HOOK, FEATURE) in [(f["hookpoint"], f["feature"]) for cand in paris["candidates"]
                               for f in cand["features"]]
    k = len(paris["features"])  # the preset's own strength 2.0, shared by the parts
    assert [f["strength"] for f in paris["features"]] == pytest.approx([2.0 / k ** 0.5] * k)


def test_presets_round_trip_and_go_stale(atlas, monkeypatch):
    loaded, path = atlas
    result = resolve_presets(loaded, load_concepts(path), candidates=4)
    on_disk = json.loads((loaded.folder / "presets.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    got = read_presets(loaded.folder, concepts_path=path)
    ok = [e for e in result["presets"] if e["status"] == "ok"]
    assert [(p.slug, p.features, p.steered_text) for p in got.presets] == [
        (e["slug"], _steering(e["features"]), e["steered_text"]) for e in ok]
    paris = got.get("paris")
    assert paris.concept == load_concepts(path)[0]
    assert (paris.hookpoint, paris.feature) == (paris.features[0].hookpoint,
                                                paris.features[0].feature)
    assert paris.steering().features == paris.features and paris.extra == ", ".join(
        f"{f.layer}:{f.feature}:{f.strength:.4g}" for f in paris.features[1:])
    assert got.get("never") is None and "never" in [f.concept.slug for f in got.failed]
    assert got.failed[0].note.startswith("A word it cannot write: no option named")
    assert read_presets(loaded.folder) is None  # resolved for another concept list
    # fresh: ensure does no work
    monkeypatch.setattr(presets, "generate", lambda *a, **k: pytest.fail("resolved again"))
    assert ensure_presets(loaded.folder, loaded, concepts_path=path) == got
    # the same bytes written again (a copy): still fresh
    weights = loaded.folder / "layers.0" / WEIGHTS_FILE
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert read_presets(loaded.folder, concepts_path=path) == got
    # another concept list: stale
    path.write_text(json.dumps({"presets": [CONCEPTS[0] | {"strength": 1.0}]}))
    assert read_presets(loaded.folder, concepts_path=path) is None
    path.write_text(json.dumps({"presets": CONCEPTS}))
    assert read_presets(loaded.folder, concepts_path=path) == got
    # another SAE: stale
    w = load_file(str(weights))
    w["b_enc"][0] += 1.0
    save_file(w, str(weights))
    assert read_presets(loaded.folder, concepts_path=path) is None


def test_ensure_resolves_when_missing_and_names_failures(atlas):
    loaded, path = atlas
    assert read_presets(loaded.folder, concepts_path=path) is None
    reports = []
    got = ensure_presets(loaded.folder, loaded, lambda m, f: reports.append((m, f)),
                         concepts_path=path, candidates=3)
    assert got == read_presets(loaded.folder, concepts_path=path)
    assert reports[-1] == ("presets ready", 1.0)
    fractions = [f for _, f in reports]
    assert fractions == sorted(fractions) and "paris" in [p.slug for p in got.presets]
    data = json.loads((loaded.folder / "presets.json").read_text())
    assert all(len(e["candidates"]) <= 3 for e in data["presets"])
    assert data["fingerprint"]["sae_fingerprint"] == current_fingerprint(loaded.folder)


def test_a_concept_without_options_fails_without_generating(atlas, monkeypatch):
    loaded, path = atlas
    monkeypatch.setattr(presets, "generate", lambda *a, **k: pytest.fail("nothing to check"))
    unwritable = PresetConcept(**CONCEPTS[0] | {"concept": "ocean", "concept_words": ["sea"]})
    result = resolve_presets(loaded, [unwritable])
    (entry,) = result["presets"]
    assert entry["status"] == "failed" and "words can be written" in entry["reason"]
    assert read_presets(loaded.folder, concepts_path=path) is None  # other concepts


def test_two_threads_resolve_once(atlas, monkeypatch):
    loaded, path = atlas
    calls, real = [], presets.generate
    monkeypatch.setattr(presets, "generate", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = [None, None]

    def work(i):
        out[i] = ensure_presets(loaded.folder, loaded, concepts_path=path)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert out[0] is not None and out[0] == out[1]
    assert len(calls) == 2  # one resolution: one batch per prompt, not two
    assert _n_hooks(loaded.lm) == 0 and not presets.is_preparing(loaded.folder)
