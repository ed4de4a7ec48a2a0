"""The bad-input matrix of the library: every public entry point the app uses rejects bad
text, numbers, ids and types with a typed exception (`BadInput`, or `HubError` for Hub
names) whose message names the field; the text that must work (emoji, right-to-left,
control characters, lone surrogates) returns a valid result; 100k characters cost no more
than a short text; no Hub request leaves for a bad repo id."""

import math
import time

import pytest
import torch

from sae_core.errors import BadInput, check_repo_id
from sae_core.explore.concepts import find_concept_features
from sae_core.explore.feature_index import ensure_feature_index
from sae_core.explore.feature_page import feature_page
from sae_core.explore.layermap import read_layer_map
from sae_core.explore.live import live_view
from sae_core.explore.search import features_by_label, search_text
from sae_core.hub.fetch import HubError, fetch, safe_path
from sae_core.hub.load import load_pretrained
from sae_core.hub.pretrained_atlas import atlas_folder
from sae_core.steer.edits import FeatureSteer, Steering, hookpoint_for_layer
from sae_core.steer.finder import find_steering
from sae_core.steer.generation import MAX_PROMPT_CHARS, GenConfig, side_by_side
from tests.counts import count

NAN, INF = math.nan, math.inf
FS = FeatureSteer


def steer(loaded, prompt="the cat", feature=3, n_new=2):
    return side_by_side(loaded, prompt, Steering((FS("layers.1", feature, 1.0),)),
                        GenConfig(max_new_tokens=n_new))


# (case id, call on the loaded tiny atlas, the field its BadInput names)
REFUSED = [
    ("live: empty", lambda a: live_view(a, ""), "the text"),
    ("live: whitespace", lambda a: live_view(a, " \n\t "), "the text"),
    ("live: only control chars", lambda a: live_view(a, "\x00\x07\x1b"), "the text"),
    ("live: over 100k chars", lambda a: live_view(a, "a" * 100_001), "the text"),
    ("live: None", lambda a: live_view(a, None), "the text"),
    ("live: list", lambda a: live_view(a, ["the cat"]), "the text"),
    ("live: dict", lambda a: live_view(a, {"text": "the"}), "the text"),
    ("live: top 0", lambda a: live_view(a, "the cat", top=0), "top"),
    ("live: top 1.5", lambda a: live_view(a, "the cat", top=1.5), "top"),
    ("live: top NaN", lambda a: live_view(a, "the cat", top=NAN), "top"),
    ("live: max_tokens inf", lambda a: live_view(a, "the", max_tokens=INF), "max_tokens"),
    ("live: max_tokens True", lambda a: live_view(a, "the", max_tokens=True), "max_tokens"),
    ("live: max_tokens negative", lambda a: live_view(a, "the", max_tokens=-5), "max_tokens"),
    ("search: empty", lambda a: search_text(a, "   "), "the text"),
    ("search: limit 0", lambda a: search_text(a, "the cat", limit=0), "limit"),
    ("search: layer 99", lambda a: search_text(a, "the cat", layers=[99]), "layers"),
    ("search: layers str", lambda a: search_text(a, "the cat", layers="0"), "layers"),
    ("search: layer True", lambda a: search_text(a, "the cat", layers=[True]), "layers"),
    ("label: task", lambda a: features_by_label(read_layer_map(a.folder), 0, "colour", "NOUN"),
     "task"),
    ("label: label None", lambda a: features_by_label(read_layer_map(a.folder), 0, "pos", None),
     "label"),
    ("label: NaN consistency", lambda a: features_by_label(
        read_layer_map(a.folder), 0, "pos", "NOUN", NAN), "min_consistency"),
    ("label: negative support", lambda a: features_by_label(
        read_layer_map(a.folder), 0, "pos", "NOUN", 0.5, -1), "min_support"),
    ("label: inf lift", lambda a: features_by_label(
        read_layer_map(a.folder), 0, "pos", "NOUN", min_lift=INF), "min_lift"),
    ("label: layer 1.5", lambda a: features_by_label(read_layer_map(a.folder), 1.5, "pos",
                                                     "NOUN"), "layer"),
    ("label: layer 99", lambda a: features_by_label(read_layer_map(a.folder), 99, "pos",
                                                    "NOUN"), "layer"),
    ("page: feature -1", lambda a: feature_page(a, "layers.1", -1), "feature"),
    ("page: feature 64", lambda a: feature_page(a, "layers.1", 64), "feature"),
    ("page: feature huge", lambda a: feature_page(a, "layers.1", 10**30), "feature"),
    ("page: feature 1.5", lambda a: feature_page(a, "layers.1", 1.5), "feature"),
    ("page: feature NaN", lambda a: feature_page(a, "layers.1", NAN), "feature"),
    ("page: feature inf", lambda a: feature_page(a, "layers.1", INF), "feature"),
    ("page: feature None", lambda a: feature_page(a, "layers.1", None), "feature"),
    ("page: feature list", lambda a: feature_page(a, "layers.1", [1]), "feature"),
    ("page: feature True", lambda a: feature_page(a, "layers.1", True), "feature"),
    ("page: feature text", lambda a: feature_page(a, "layers.1", "five"), "feature"),
    ("page: layer 9", lambda a: feature_page(a, "layers.9", 0), "layer"),
    ("page: hookpoint list", lambda a: feature_page(a, ["layers.1"], 0), "layer"),
    ("steer: strength NaN", lambda a: FS("layers.1", 0, NAN), "strength"),
    ("steer: strength inf", lambda a: FS("layers.1", 0, -INF), "strength"),
    ("steer: strength huge", lambda a: FS("layers.1", 0, 1e9), "strength"),
    ("steer: strength True", lambda a: FS("layers.1", 0, True), "strength"),
    ("steer: strength text", lambda a: FS("layers.1", 0, "0.5"), "strength"),
    ("steer: feature -1", lambda a: FS("layers.1", -1, 0.5), "feature"),
    ("steer: feature 1.5", lambda a: FS("layers.1", 1.5, 0.5), "feature"),
    ("steer: feature NaN", lambda a: FS("layers.1", NAN, 0.5), "feature"),
    ("steer: hookpoint None", lambda a: FS(None, 0, 0.5), "hookpoint"),
    ("steer: mode", lambda a: FS("layers.1", 0, 0.5, "boost"), "mode"),
    ("steer: features not steers", lambda a: Steering((1, 2)), "features"),
    ("steer: no features", lambda a: Steering(()), "features"),
    ("steer: positions", lambda a: Steering((FS("layers.1", 0, 0.5),), "some"), "positions"),
    ("steer: feature 64", lambda a: steer(a, feature=64), "feature"),
    ("steer: layer 99", lambda a: hookpoint_for_layer(a.saes, 99), "layer"),
    ("steer: layer -1", lambda a: hookpoint_for_layer(a.saes, -1), "layer"),
    ("steer: layer NaN", lambda a: hookpoint_for_layer(a.saes, NAN), "layer"),
    ("steer: not a Steering", lambda a: side_by_side(a, "the", "layers.1:3", GenConfig()),
     "steering"),
    ("gen: 0 new tokens", lambda a: GenConfig(max_new_tokens=0), "max new tokens"),
    ("gen: 1.5 new tokens", lambda a: GenConfig(max_new_tokens=1.5), "max new tokens"),
    ("gen: huge new tokens", lambda a: GenConfig(max_new_tokens=10**12), "max new tokens"),
    ("gen: NaN temperature", lambda a: GenConfig(temperature=NAN), "temperature"),
    ("gen: negative temperature", lambda a: GenConfig(temperature=-1), "temperature"),
    ("gen: huge seed", lambda a: GenConfig(seed=2**70), "seed"),
    ("gen: seed text", lambda a: GenConfig(seed="0"), "seed"),
    ("prompt: empty", lambda a: steer(a, prompt=""), "prompt"),
    ("prompt: whitespace", lambda a: steer(a, prompt="\n \t"), "prompt"),
    ("prompt: 100k chars", lambda a: steer(a, prompt="the " * 25_000), "prompt"),
    ("prompt: one over the limit", lambda a: steer(a, prompt="a" * (MAX_PROMPT_CHARS + 1)),
     "prompt"),
    ("prompt: None", lambda a: steer(a, prompt=None), "prompt"),
    ("prompt: list", lambda a: steer(a, prompt=["the cat"]), "prompt"),
    ("finder: empty concept", lambda a: find_steering(a, "  "), "concept"),
    ("finder: None concept", lambda a: find_steering(a, None), "concept"),
    ("finder: list concept", lambda a: find_steering(a, ["cat"]), "concept"),
    ("finder: related number", lambda a: find_steering(a, "cat", 5), "related words"),
    ("finder: related 100k", lambda a: find_steering(a, "cat", "x," * 50_000), "related words"),
    ("finder: layers reversed", lambda a: find_steering(a, "cat", layers=(2, 0)), "layers"),
    ("finder: layers NaN", lambda a: find_steering(a, "cat", layers=(0, NAN)), "layers"),
    ("finder: layers out of range", lambda a: find_steering(a, "cat", layers=(50, 60)),
     "layers"),
    ("concepts: blank", lambda a: find_concept_features(a, " \t"), "concept"),
    ("concepts: too long", lambda a: find_concept_features(a, "cat " * 30), "concept"),
    ("concepts: 100k chars", lambda a: find_concept_features(a, "c" * 100_000), "concept"),
    ("concepts: top 0", lambda a: find_concept_features(a, "cat", top=0), "top"),
]


@pytest.fixture(scope="module")
def indexed(loaded, tiny_atlas):
    ensure_feature_index(tiny_atlas, lm=loaded.lm)
    return loaded


@pytest.mark.parametrize(("call", "field"), [pytest.param(c, f, id=i) for i, c, f in REFUSED])
def test_bad_input_is_a_typed_error_naming_the_field(indexed, call, field):
    count("bad-input cases tried")
    t0 = time.perf_counter()
    with pytest.raises(BadInput) as caught:
        call(indexed)
    assert caught.value.field == field
    assert field.rstrip("s").replace("_", " ").split()[-1] in str(caught.value).lower().replace(
        "_", " ")
    assert time.perf_counter() - t0 < 5  # refused at once, even for 100k characters


# Text that must work: (case id, text, what the live view must show of it)
ACCEPTED = [
    ("emoji", "the cat 🐱🙂 sat 👩‍👩‍👧", "🐱🙂"),
    ("right-to-left", "the cat مرحبا بالعالم שלום sat", "مرحبا"),
    ("control chars", "the\x00 cat\x07 sat\x1b on\r\nthe mat", "the cat sat on\nthe mat"),
    ("lone surrogate", "the cat \ud800 sat \udfff", "the cat  sat "),
    ("combining and bidi marks", "the e\u0301 cat \u202ethe\u202c mat \u200b", "e\u0301"),
    ("100k characters", "the cat sat " * 8_333 + "mat", "the cat sat"),
]


@pytest.mark.parametrize(("text", "shown"), [pytest.param(t, s, id=i) for i, t, s in ACCEPTED])
def test_strange_text_gives_a_valid_live_view_and_search(indexed, text, shown):
    count("bad-input cases tried")
    t0 = time.perf_counter()
    view = live_view(indexed, text)
    assert shown in view.text and "".join(view.pieces) == view.text
    assert view.text.encode("utf-8")  # no surrogate left: every tokenizer can take it
    assert view.top_idx_TLK.shape[:2] == (view.n_tokens, 3) and view.n_tokens >= 1
    hits, _ = search_text(indexed, text)
    assert all(0 <= h.feature < 64 and h.layer in (0, 1, 2) for h in hits)
    if len(text) > 10_000:
        assert view.n_tokens <= 128 and any("long" in n for n in view.notices)
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize("prompt", ["the cat 🐱 مرحبا", "the \ud800 cat", "the\x00 cat\x1b"],
                         ids=["emoji+rtl", "surrogate", "control"])
def test_strange_prompts_steer(indexed, prompt):
    """The tokenizer never sees a lone surrogate; both rows are written."""
    count("bad-input cases tried")
    out = steer(indexed, prompt=prompt, n_new=3)
    assert out.n_tokens[0] >= 1 and out.n_tokens[1] >= 1
    assert isinstance(out.unsteered, str) and isinstance(out.steered, str)


def test_a_feature_id_typed_as_text_counts(indexed):
    assert feature_page(indexed, "layers.1", " 5 ").feature == 5 == \
        feature_page(indexed, "layers.1", 5.0).feature


BAD_REPO_IDS = ["../../etc/passwd", "/etc/passwd", "org/../etc", "org/name/extra", "a" * 97,
                "org/na--me", "org/name.git", "", "  ", None, 42, ["org/name"], "org /name",
                "C:\\Windows", "org/ná", "-org/name"]


@pytest.mark.parametrize("repo_id", BAD_REPO_IDS)
def test_bad_repo_ids_are_refused_before_any_request(repo_id, monkeypatch, tmp_path):
    count("bad-input cases tried")

    def no_request(*a, **kw):
        raise AssertionError("a Hub request left for a bad repo id")

    monkeypatch.setattr("sae_core.hub.fetch.hf_hub_download", no_request)
    monkeypatch.setattr("huggingface_hub.list_repo_files", no_request)
    with pytest.raises(BadInput, match="repo id"):
        check_repo_id(repo_id)
    with pytest.raises(HubError, match="repo id"):
        fetch(repo_id, "cfg.json", revision=None, cache_dir=tmp_path, token=False)
    if isinstance(repo_id, str) and repo_id.strip():
        with pytest.raises(HubError, match="repo id"):
            load_pretrained(repo_id, "sae", cache_dir=tmp_path)
        if "." not in repo_id[-5:]:  # a name with a suffix would be read as a local file
            from sae_core.corpus import load_texts
            with pytest.raises(BadInput, match="corpus dataset id"):
                load_texts(repo_id)


@pytest.mark.parametrize("repo_id", ["org/name", "name", "EleutherAI/sae-SmolLM2-135M-64x",
                                     "a/b", "org/v1.0_x"])
def test_good_repo_ids_pass(repo_id):
    assert check_repo_id(f" {repo_id} ") == repo_id


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../b", "C:/x", None, "a" * 301])
def test_paths_inside_a_repo_stay_inside(path, monkeypatch, tmp_path):
    count("bad-input cases tried")
    monkeypatch.setattr("sae_core.hub.fetch.hf_hub_download", pytest.fail)
    with pytest.raises(HubError):
        safe_path(path)
    with pytest.raises(HubError):
        fetch("org/name", path, revision=None, cache_dir=tmp_path, token=False)


@pytest.mark.parametrize("revision", ["../main", "a b", "", "x" * 201, 5])
def test_bad_revisions_are_refused(revision, monkeypatch, tmp_path):
    count("bad-input cases tried")
    monkeypatch.setattr("sae_core.hub.fetch.hf_hub_download", pytest.fail)
    with pytest.raises(HubError, match="revision"):
        fetch("org/name", "cfg.json", revision=revision, cache_dir=tmp_path, token=False)


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "..", ".", "a/b/../..",
                                  "~root", "\\\\server\\share", "name\x00", "set 🙂"])
def test_set_names_never_leave_their_root(name, tmp_path):
    count("bad-input cases tried")
    out = atlas_folder(tmp_path / "root", name)
    assert out.parent == tmp_path / "root" and out.name not in ("", ".", "..")
    assert "/" not in out.name and "\\" not in out.name and "\x00" not in out.name


@pytest.mark.parametrize("name", [None, "", "  ", "x" * 101, 5, ["a"]])
def test_bad_set_names_are_refused(name, tmp_path):
    count("bad-input cases tried")
    with pytest.raises(HubError, match="name"):
        atlas_folder(tmp_path, name)


def test_steering_direction_must_be_a_tensor():
    from sae_core.steer.edits import DirectionSteer

    with pytest.raises(BadInput, match="tensor"):
        DirectionSteer("layers.1", [1.0, 2.0], 0.5)
    assert DirectionSteer("layers.1", torch.ones(4), 0.5).strength == 0.5


# The one input checker: (value, whole, what it reads as; None: refused). Text is read only
# with from_text (a form, an API caller); the library's own checks refuse it.
CHECKED = [
    (12, True, 12), (12, False, 12.0), ("12", True, 12), (" 3.5 ", False, 3.5),
    ("3.0", True, 3), (3.0, True, 3), ("+7", True, 7), ("-2.5", False, -2.5), (".5", False, 0.5),
    ("1e3", True, 1000), ("abc", False, None), ("", True, None), ("  ", False, None),
    (None, True, None), (NAN, False, None), (INF, True, None), (-INF, False, None),
    (True, True, None), (False, False, None), ("1e309", False, None), ("0x10", True, None),
    ("1_000", True, None), ("nan", False, None), ("inf", False, None), ("١٢", True, None),
    ("²", True, None), (3.5, True, None), ([1], True, None), ("9" * 41, True, None),
    (10**30, True, None), (10**400, False, None), ("9" * 30, True, None), (1e300, False, None),
]


@pytest.mark.parametrize(("value", "whole", "read"), CHECKED,
                         ids=[repr(c[0])[:20] for c in CHECKED])
def test_the_input_checker_reads_numbers_and_text_and_refuses_the_rest(value, whole, read):
    from sae_core.errors import check_number

    count("bad-input cases tried")
    lo, hi = (-10**6, 10**6) if whole else (-1e6, 1e6)
    if read is None:
        with pytest.raises(BadInput, match=rf"^x must be a {'whole number' if whole else 'number'}"
                                           r" from -1[,e].* to 1.*, got "):
            check_number(value, "x", lo, hi, whole=whole, from_text=True)
    else:
        got = check_number(value, "x", lo, hi, whole=whole, from_text=True)
        assert got == read and type(got) is type(read)
    if isinstance(value, str):  # the library's own checks never take text
        with pytest.raises(BadInput):
            check_number(value, "x", lo, hi, whole=whole)


def test_the_checker_compares_huge_whole_numbers_exactly():
    from sae_core.errors import check_whole

    big = 10**30
    assert check_whole(str(big), "n", 0, None, from_text=True) == big
    assert check_whole(big, "n", big, big) == big
    with pytest.raises(BadInput, match="from 0 to 1,000,000,000,000,000,000,000,000,000,000"):
        check_whole(big + 1, "n", 0, big)
    with pytest.raises(BadInput, match="n must be a whole number of at least 1, got 0"):
        check_whole(0, "n", 1)
