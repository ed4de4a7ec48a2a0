"""Feature names on planted firings: a token feature, a label feature, a weak and a random
feature, a dead one; their held-out scores, the stored names and search by name."""

import math

import pytest
import torch

from sae_core.atomic import CorruptFile
from sae_core.config import SaeConfig
from sae_core.explore.firings import LayerFirings
from sae_core.explore.logit_lens import direction_logits
from sae_core.explore.names import (
    DRAWS,
    LOW_SCORE,
    NAMES_FILE,
    FeatureNames,
    _rule_counts,
    compute_names,
    detected_draws,
    label_of,
    name_scores,
    predicted_by_document,
    read_names,
    share_detected,
)
from sae_core.explore.names_evidence import Evidence, half_of, token_evidence, top_per_group
from sae_core.sae import Sae
from tests.conftest import save_as_atlas, tiny_lm

N, D, F = 6000, 32, 8
CAT, DOG = 4, 9  # token ids of "cat" and "dog" in the tiny tokenizer
TOKEN_F, LABEL_F, WEAK_F, RANDOM_F, DEAD_F = 0, 1, 2, 3, 4
VOCAB = {"pos": ["A", "B", "DET", "D", "E", "F"], "dep": ["a", "b", "c", "d"],
         "ent": ["x", "y", "z"], "shape": ["p", "q", "r", "s", "t"]}


def planted_firings(seed: int = 0) -> LayerFirings:
    """Tokens and labels drawn independently; feature 0 fires exactly on "cat", 1 exactly on
    pos DET, 2 on 15% of "dog" and 5% of other tokens, 3 on 10% of all, 4 never; 5-7 at 20%."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(3, 16, (N,), generator=gen)
    labels = {t: torch.randint(0, len(v), (N,), generator=gen) for t, v in VOCAB.items()}
    u = torch.rand(N, F, generator=gen)
    fires = u < 0.2
    fires[:, TOKEN_F] = tokens == CAT
    fires[:, LABEL_F] = labels["pos"] == VOCAB["pos"].index("DET")
    fires[:, WEAK_F] = u[:, WEAK_F] < torch.where(tokens == DOG, 0.15, 0.05)
    fires[:, RANDOM_F] = u[:, RANDOM_F] < 0.1
    fires[:, DEAD_F] = False
    idx = torch.arange(F).expand(N, F).contiguous()
    vals = fires.float() * (1 + torch.rand(N, F, generator=gen))
    heldout = (torch.arange(N) // 16) % 2 == 1  # every second window of 16 tokens
    return LayerFirings(torch.zeros(N, D, dtype=torch.bfloat16), labels, idx, fires, F, vals,
                        tokens, torch.arange(N), heldout, torch.arange(N) // 40)


@pytest.fixture(scope="module")
def named():
    lm = tiny_lm()
    sae = Sae.init_from_data(SaeConfig(d_in=D, d_sae=F, k=3, hookpoint="layers.0"),
                             torch.randn(64, D), seed=0)
    firings = {"layers.0": planted_firings()}
    return lm, sae, compute_names(lm, {"layers.0": sae}, firings, VOCAB)


def test_a_token_feature_is_named_by_its_token_and_detected_on_held_out_tokens(named):
    _, _, names = named
    n = names.name("layers.0", TOKEN_F)
    assert n.text.startswith("'cat' →") and n.rule == "tokens"
    assert n.precision == n.recall == n.f1 == 1.0 and not n.weak
    assert label_of(names, "layers.0", TOKEN_F) == f"{n.text} (F1 1.00)"


def test_a_label_feature_is_named_by_its_label(named):
    _, _, names = named
    n = names.name("layers.0", LABEL_F)
    assert n.text.startswith("DET →") and n.rule == "label" and n.f1 == 1.0


def test_a_feature_that_barely_prefers_a_token_gets_a_weak_name(named):
    _, _, names = named
    n = names.name("layers.0", WEAK_F)
    assert n.text.startswith("'dog'") and n.rule == "tokens"
    assert n.f1 < LOW_SCORE and n.weak  # precision ~0.15, recall ~0.2
    assert "?" in label_of(names, "layers.0", WEAK_F)


def test_random_and_dead_features_have_no_name(named):
    _, _, names = named
    random, dead = names.name("layers.0", RANDOM_F), names.name("layers.0", DEAD_F)
    assert (random.text, random.rule, random.f1) == ("unnamed", "", 0.0)
    assert (dead.text, dead.support) == ("dead", 0) and not dead.weak
    assert label_of(names, "layers.0", DEAD_F) == "dead"
    assert label_of(names, "layers.9", 0) == label_of(None, "layers.0", 0) == ""


def test_promoted_tokens_are_the_logit_lens_top_tokens(named):
    lm, sae, names = named
    lay = names.layers["layers.0"]
    text_tokens = len(lm.tokenizer)  # the model's other rows pad its vocabulary
    for f in (TOKEN_F, LABEL_F, WEAK_F):
        logits = direction_logits(lm, sae.W_dec.detach()[f:f + 1])[0, :text_tokens]
        assert lay["promotes"][f].tolist() == logits.topk(3).indices.tolist()
    assert (lay["promotes"][[RANDOM_F, DEAD_F]] == -1).all()  # no name, no arrow


def test_search_by_name_finds_the_planted_features(named):
    _, _, names = named
    assert names.search("cat")[0][:2] == ("layers.0", TOKEN_F)
    assert names.search(" DET")[0][:2] == ("layers.0", LABEL_F)
    assert [m.feature for m in names.search("'dog'")] == [WEAK_F]
    assert names.search("unnamed") == names.search("  ") == []


def test_the_share_of_well_named_features_per_band(named):
    _, _, names = named
    first, second, _ = share_detected(names)
    # 7 alive features; 0 and 1 detected with F1 1 (5-7 fire at random, so score low)
    assert first.n_alive == 7 and math.isclose(first.share, 2 / 7)
    assert second.n_alive == 0 and math.isnan(second.share)
    # 0 and 1 detect their firings in every draw of documents, the others in none
    assert first.lo == first.hi == 2 / 7
    assert names.layers["layers.0"][DRAWS].tolist() == [2.0] * len(
        names.layers["layers.0"][DRAWS])
    assert math.isnan(share_detected(names, min_f1=0.1)[0].lo)  # draws count F1 >= 0.5


def test_counts_by_document_sum_to_the_held_out_counts_of_every_rule():
    firings = planted_firings(seed=3)
    labels_TN = torch.stack([firings.labels[t] for t in VOCAB])
    held = half_of(firings.idx_NK, firings.valid_NK, firings.tokens_N, labels_TN,
                   firings.heldout_N)
    ev = Evidence(torch.tensor([[CAT, DOG, -1]] * 4 + [[-1] * 3] * 4),
                  torch.tensor([0, 1, -1, 3] * 2), torch.tensor([2, 0, -1, 4] * 2))
    n_labels = [len(v) for v in VOCAB.values()]
    direct = _rule_counts(held, n_labels, ev)
    doc_N = firings.doc_N[firings.heldout_N]
    n_docs = int(doc_N.max()) + 1
    for rule in (1, 2, 3):
        rule_F = torch.full((F,), rule)
        by_doc = predicted_by_document(held, doc_N, ev, rule_F, n_labels, n_docs)
        assert by_doc.shape == (F, n_docs)
        assert by_doc.sum(1).double().tolist() == direct.predicted[:, rule - 1].tolist()
    # all documents once: the draw's count is the detected features' count
    score = name_scores(held, held, n_labels, ev)  # scored on the same half: F1 as stored
    ones = torch.ones(1, n_docs, dtype=torch.float64)
    alive = torch.ones(F, dtype=torch.bool)
    expected = int(((score.f1_F >= 0.5) & (score.rule_F > 0)).sum())
    assert detected_draws(held, doc_N, ev, score.rule_F, alive, n_labels, ones).item() \
        == expected


def test_names_are_stored_keyed_by_the_sae_fingerprint(named, tmp_path):
    _, sae, names = named
    names.sae_fingerprint = save_as_atlas(tmp_path, {"layers.0": sae})
    names.save(tmp_path / NAMES_FILE)
    again = read_names(tmp_path)
    assert again.name("layers.0", WEAK_F) == names.name("layers.0", WEAK_F)
    assert again.strings == names.strings and again.n_tokens == names.n_tokens
    assert torch.equal(again.layers["layers.0"][DRAWS], names.layers["layers.0"][DRAWS])
    other = FeatureNames.load(tmp_path / NAMES_FILE)
    other.sae_fingerprint = "another"
    other.save(tmp_path / NAMES_FILE)
    assert read_names(tmp_path) is None and read_names(None) is None
    (tmp_path / NAMES_FILE).write_bytes(b"\x00" * 10)
    with pytest.raises(CorruptFile):
        FeatureNames.load(tmp_path / NAMES_FILE)


def test_a_missing_names_file_reads_as_none(tmp_path):
    assert read_names(tmp_path) is None


def test_top_per_group_ranks_within_each_group():
    group = torch.tensor([2, 0, 2, 2, 0, 2])
    value = torch.tensor([10, 11, 12, 13, 14, 15])
    order = torch.tensor([1, 5, 3, 3, 5, 2])
    out = top_per_group(group, value, 3, 3, order)
    # group 0: 11 and 14 tie on order -> smaller value first; group 2: 13 (3), 12 (3), 15 (2)
    assert out.tolist() == [[11, 14, -1], [-1, -1, -1], [12, 13, 15]]


def test_rule_counts_by_hand():
    """One task, 2 labels; feature 0 named ('x' = id 5, label 1), feature 1 only 'x'.
    Learn tokens 0-5, held-out tokens 6-11 (ids / labels below)."""
    tokens = torch.tensor([5, 5, 6, 6, 7, 7, 5, 6, 6, 7, 7, 5])
    labels = torch.tensor([[0, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 0]])
    # feature 0 fires on 0, 2, 6, 7, 9; feature 1 on 1, 11, 8 (one slot each, -1: none)
    idx = torch.tensor([0, 1, 0, -1, -1, -1, 0, 0, 1, 0, -1, 1])[:, None]
    learn, held = (half_of(idx, idx >= 0, tokens, labels, rows)
                   for rows in (torch.arange(12) < 6, torch.arange(12) >= 6))
    ev = Evidence(torch.tensor([[5, -1, -1], [5, -1, -1]]), torch.tensor([0, -1]),
                  torch.tensor([1, -1]))
    score = name_scores(learn, held, [2], ev)
    # learn, feature 0: hits / predicted: tokens 1/2, label 1/2, either 2/4: F1 .5, .5, .67
    # held out: tokens {6, 11} -> 1 hit; label {7, 9} -> 2 hits; either 3 of 4 predicted.
    assert score.rule_F.tolist() == [3, 1]
    assert score.precision_F[0] == 0.75 and score.recall_F[0] == 1.0
    assert abs(float(score.f1_F[0]) - 6 / 7) < 1e-6
    # feature 1, tokens rule on held out: predicted {6, 11}, fires {8, 11}: 1 hit
    assert score.precision_F[1] == 0.5 and score.recall_F[1] == 0.5


def test_features_by_name(named):
    from sae_core.errors import BadInput
    from sae_core.explore.search import features_by_name

    _, _, names = named
    hit = features_by_name(names, "cat")[0]
    assert (hit.layer, hit.feature, hit.f1, hit.weak) == (0, TOKEN_F, 1.0, False)
    assert features_by_name(names, "dog")[0].weak
    with pytest.raises(BadInput):
        features_by_name(names, "   ")


def test_a_rare_token_it_is_about_outranks_a_common_one_it_merely_prefers():
    """Token 1 is 25% of the tokens and 10 of the 16 firings (lift 2.5); token 2 is 4 tokens
    in 1,600 and fires every time (lift 100): 4 x ln 100 > 10 x ln 2.5, so token 2 leads
    although it has fewer firings."""
    n = 1600
    tokens = torch.full((n,), 3)
    tokens[:400] = 1
    tokens[400:404] = 2
    fires = torch.zeros(n, dtype=torch.bool)
    fires[:10] = True  # token 1
    fires[400:404] = True  # token 2
    fires[500:502] = True  # token 3, below the 3-firing minimum
    learn = half_of(torch.zeros(n, 1, dtype=torch.long), fires[:, None], tokens,
                    torch.zeros(1, n, dtype=torch.long), torch.arange(n))
    assert token_evidence(learn, 1).tolist() == [[2, 1, -1]]
