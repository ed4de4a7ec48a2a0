"""What a feature does when pushed, on a tiny model whose unembedding maps the feature's
direction to two known tokens."""

import pytest
import torch

from sae_core.atlas.info import AtlasInfo
from sae_core.atlas.layout import LoadedAtlas
from sae_core.config import SaeConfig
from sae_core.errors import BadInput
from sae_core.sae import Sae
from sae_core.steer.pushed import pushed_tokens
from tests.conftest import tiny_lm
from tests.steer.common import PROMPT

H = "layers.2"  # the last block: its output goes through the final norm to the unembedding
MAT, A = 7, 8  # token ids of "mat" and "a"
PROMPTS = (PROMPT, "Paris is big", "the dog sat on a mat")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """Feature 1's decoder row is along dimension 0 (not unit length); only "mat" and "a"
    read dimension 0 in the unembedding, equally."""
    lm = tiny_lm()
    sae = Sae(SaeConfig(d_in=32, d_sae=4, k=2, hookpoint=H))
    with torch.no_grad():
        sae.W_dec.normal_()
        sae.W_dec[1] = 0.0
        sae.W_dec[1, 0] = 0.5
        head = lm.model.get_output_embeddings().weight
        head[:, 0] = 0.0
        head[[MAT, A], 0] = 5.0
    sae.metadata = {"median_norm": 1.0}  # ~10x the tiny model's residual norm: a push wins
    return LoadedAtlas(tmp_path_factory.mktemp("pushed"),
                       AtlasInfo(model=lm.name, hookpoints=(H,)), {}, {H: sae}, lm,
                       "fingerprint")


def test_the_tokens_the_direction_maps_to_rise_first(loaded):
    top = pushed_tokens(loaded, H, 1, strength=0.3, prompts=PROMPTS, k=5)
    assert {t.token_id for t in top[:2]} == {MAT, A}
    assert {t.token for t in top[:2]} == {"mat", "a"}
    for t in top[:2]:
        assert t.clean < 0.2 < t.pushed and abs(t.rise - (t.pushed - t.clean)) < 1e-9
    assert top[2].rise < 0.05 < top[1].rise  # nothing else gains much
    assert [t.rise for t in top] == sorted((t.rise for t in top), reverse=True)


def test_pushing_the_other_way_lowers_them_and_no_push_changes_nothing(loaded):
    down = pushed_tokens(loaded, H, 1, strength=-0.3, prompts=PROMPTS, k=14)
    assert not {MAT, A} & {t.token_id for t in down if t.rise > 0}
    still = pushed_tokens(loaded, H, 1, strength=0.0, prompts=PROMPTS, k=3)
    assert all(abs(t.rise) < 1e-6 for t in still)


def test_the_default_prompts_run(loaded):
    top = pushed_tokens(loaded, H, 1)  # the neutral sentences (mostly <unk> here)
    assert len(top) == 10 and {top[0].token_id, top[1].token_id} == {MAT, A}


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"hookpoint": "layers.9"}, "hookpoint"),
    ({"hookpoint": 2}, "hookpoint"),
    ({"feature": 4}, "feature"),
    ({"feature": -1}, "feature"),
    ({"strength": 50.0}, "strength"),
    ({"strength": float("nan")}, "strength"),
    ({"prompts": []}, "prompts"),
    ({"prompts": "the cat"}, "prompts"),
    ({"prompts": ["  "]}, "a prompt"),
    ({"k": 0}, "k"),
])
def test_bad_input_is_refused_with_the_field_named(loaded, kwargs, field):
    args = {"hookpoint": H, "feature": 1} | kwargs
    with pytest.raises(BadInput) as err:
        pushed_tokens(loaded, **args)
    assert err.value.field == field
