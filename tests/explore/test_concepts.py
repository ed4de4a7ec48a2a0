"""Concept search on the tiny atlas, with a feature planted to fire on one word."""

import pytest
import torch

from sae_core.atlas.layout import LoadedAtlas
from sae_core.explore import concepts
from sae_core.explore.concepts import find_concept_features
from sae_core.explore.layermap import read_layer_map
from sae_core.hooks import run_captured
from sae_core.sae import Sae
from ui.serving import session

# The tiny tokenizer splits on spaces and knows only a few words (tests/conftest.py).
TEMPLATES = ("the dog sat on {c} .", "a cat ran on {c} , the mat is big",
             "the dog is on {c} .", "a mat , a {c} , a dog")
NEUTRAL = ("the cat sat on the mat .", "a dog ran , the mat is big .", "the dog is big .",
           "a cat is on a mat , the dog ran .")


@pytest.fixture
def tiny_templates(monkeypatch):
    monkeypatch.setattr(concepts, "TEMPLATES", TEMPLATES)
    monkeypatch.setattr(concepts, "NEUTRAL", NEUTRAL)
    concepts._neutral.clear()
    yield
    concepts._neutral.clear()


def _planted(loaded: LoadedAtlas, hookpoint: str, feature: int, word: str) -> LoadedAtlas:
    """A copy of the atlas whose SAE at `hookpoint` has `feature` firing only on `word`."""
    tok, sae = loaded.lm.tokenizer, loaded.saes[hookpoint]
    word_id = tok.convert_tokens_to_ids(word)
    texts = [t.replace("{c}", word) for t in TEMPLATES] + list(NEUTRAL)
    rows = [tok(t).input_ids for t in texts]
    L = max(map(len, rows))
    ids = torch.tensor([r + [0] * (L - len(r)) for r in rows])
    x = run_captured(loaded.lm, ids, [hookpoint], bf16=False)[hookpoint]
    on = ids == word_id
    on[:, 0] = False
    u = x[on].mean(0) - x[~on].mean(0)
    u = u / u.norm()
    proj = (x - sae.b_dec) @ u
    cut = (proj[on].min() + proj[~on].max()) / 2
    assert proj[on].min() > proj[~on].max()  # the word is separable at this layer
    new = Sae(sae.cfg)
    new.load_state_dict(sae.state_dict())
    new.metadata = dict(sae.metadata)
    with torch.no_grad():
        new.W_enc_SD[feature] = 1000 * u  # far above every other latent: always in the top k
        new.b_enc[feature] = -1000 * cut
    saes = dict(loaded.saes) | {hookpoint: new}
    return LoadedAtlas(loaded.folder / "planted", loaded.info, loaded.metrics, saes, loaded.lm)


def test_a_planted_word_feature_ranks_first(tiny_atlas, tiny_templates):
    loaded = _planted(session.open_atlas(tiny_atlas), "layers.1", 17, "Paris")
    hits = find_concept_features(loaded, "Paris", top=6, per_layer=2)
    assert (hits[0].hookpoint, hits[0].feature) == ("layers.1", 17)
    assert hits[0].fires == 1.0 and hits[0].neutral_rate == 0.0
    assert "Paris" in hits[0].snippet
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)
    assert all(h.fires >= 0.5 and h.neutral_rate <= concepts.MAX_NEUTRAL_RATE for h in hits)
    assert all(sum(g.hookpoint == h.hookpoint for g in hits) <= 2 for h in hits)
    only = find_concept_features(loaded, "Paris", layers=(2, 2))
    assert {h.hookpoint for h in only} <= {"layers.2"}


def test_concept_search_has_labels_from_the_layer_map(tiny_atlas, tiny_templates):
    loaded = session.open_atlas(tiny_atlas)
    hits = find_concept_features(loaded, "cat", top=5)
    assert any(h.label for h in hits)
    lmap = read_layer_map(loaded.folder)
    for hit in hits:  # a feature that never fired on the labelled text has no label
        names = [lmap.vocab[t][lab] for t in concepts.LABEL_TASKS
                 if (lab := int(lmap.stats("sae", hit.hookpoint, t).label[hit.feature])) >= 0
                 and lmap.vocab[t][lab] not in ("none", "sep", "space")]
        assert bool(names) == bool(hit.label) and all(n in hit.label for n in names)


def test_bad_concepts_are_clear_errors(tiny_atlas, tiny_templates):
    loaded = session.open_atlas(tiny_atlas)
    for concept, match in (("  ", "type a word"), ("x" * 61, "under 60"),
                           ("cat", "no layer")):
        with pytest.raises(ValueError, match=match):
            find_concept_features(loaded, concept, layers=(5, 9))
