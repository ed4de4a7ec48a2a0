"""A copy of the tiny atlas with a planted concept feature, and concepts to resolve on it
(shared by the preset tests of the library and of the Steering tab)."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from sae_core.atlas.layout import LoadedAtlas, open_with
from sae_core.explore import concepts
from sae_core.hooks import run_captured
from sae_core.lm import LM
from sae_core.sae import WEIGHTS_FILE
from tests.conftest import restamp
from tests.steer.common import PROMPT

# The tiny tokenizer splits on spaces and knows only a few words (tests/conftest.py).
TEMPLATES = ("the dog sat on {c} .", "a cat ran on {c} , the mat is big",
             "the dog is on {c} .", "a mat , a {c} , a dog")
NEUTRAL = ("the cat sat on the mat .", "a dog ran , the mat is big .", "the dog is big .",
           "a cat is on a mat , the dog ran .")
HOOK, FEATURE, WORD = "layers.2", 9, "Paris"
"""The planted feature: fires on "Paris" (a word the neutral sentences lack) and writes
"Paris" when pushed."""
CONCEPTS = [
    {"slug": "paris", "name": "All roads lead to Paris", "prompt": PROMPT, "concept": "Paris",
     "concept_words": ["Paris"], "strength": 2.0, "max_new_tokens": 8},
    {"slug": "never", "name": "A word it cannot write", "prompt": PROMPT, "concept": "cat",
     "concept_words": ["ocean"], "strength": 2.0, "max_new_tokens": 8},
    {"slug": "mat", "name": "Mats", "prompt": PROMPT, "concept": "mat",  # in every sentence:
     "concept_words": ["mat"], "strength": 2.0, "max_new_tokens": 8},  # no candidate
    {"slug": "cat", "name": "Cats", "prompt": "a cat is on the", "concept": "cat",
     "concept_words": ["cat", "cats"], "strength": 1.5, "max_new_tokens": 6},
]


@pytest.fixture
def tiny_search(monkeypatch):
    """The concept search's sentences in the tiny vocabulary."""
    monkeypatch.setattr(concepts, "TEMPLATES", TEMPLATES)
    monkeypatch.setattr(concepts, "NEUTRAL", NEUTRAL)
    concepts._neutral.clear()
    yield
    concepts._neutral.clear()


def plant(folder, lm) -> None:
    """Rewrite the SAE at HOOK so FEATURE fires only on WORD and its decoder row is the
    unembedding of WORD (HOOK is the last block: pushing it makes the model write WORD)."""
    tok = lm.tokenizer
    word_id = tok.convert_tokens_to_ids(WORD)
    rows = [tok(t.replace("{c}", WORD)).input_ids for t in TEMPLATES] + [
        tok(t).input_ids for t in NEUTRAL]
    L = max(map(len, rows))
    ids = torch.tensor([r + [0] * (L - len(r)) for r in rows])
    x = run_captured(lm, ids, [HOOK], bf16=False)[HOOK]
    on = ids == word_id
    on[:, 0] = False
    u = x[on].mean(0) - x[~on].mean(0)
    u = u / u.norm()
    path = folder / HOOK / WEIGHTS_FILE
    w = load_file(str(path))
    proj = (x - w["b_dec"]) @ u
    assert proj[on].min() > proj[~on].max()  # the word is separable at this layer
    w["W_enc"][:, FEATURE] = 1000 * u  # far above every other latent: always in the top k
    w["b_enc"][FEATURE] = -1000 * (proj[on].min() + proj[~on].max()) / 2
    w["W_dec"][FEATURE] = lm.model.lm_head.weight[word_id]
    save_file(w, str(path))


def planted_copy(tiny_atlas, lm: LM, tmp_path) -> tuple[LoadedAtlas, object]:
    """(a copy of the tiny atlas with the planted feature, a file of CONCEPTS)."""
    folder = tmp_path / "planted"
    shutil.copytree(tiny_atlas, folder)
    plant(folder, lm)
    restamp(folder)
    path = tmp_path / "concepts.json"
    path.write_text(json.dumps({"presets": CONCEPTS}))
    return open_with(folder, lm), path
