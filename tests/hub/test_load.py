"""Loading a set: the model check and the list of SAE ids."""

import pytest
import torch

from sae_core.hub.fetch import HubError
from sae_core.hub.load import load_pretrained
from tests.hub.repos import S, raw_saelens, saelens_repo, v6_cfg


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
    wrong_width = r"width 48 but tiny-llama has width 32 at layers.1.*gpt2-small"
    with pytest.raises(HubError, match=wrong_width):
        load_pretrained("org/tiny-saes", "sae", lm=lm, cache_dir=cache)
    cache = saelens_repo(tmp_path / "c", cfg=v6_cfg(hook="blocks.7.hook_resid_post"))
    with pytest.raises(HubError, match="layer 7 out of range"):
        load_pretrained("org/tiny-saes", "sae", lm=lm, cache_dir=cache)


def test_sae_ids_are_a_list_or_comma_separated_and_all_needs_a_release():
    from sae_core.hub.load import parse_ids
    from sae_core.hub.registry import RELEASES

    assert parse_ids(" a, b ,,c ", None) == ["a", "b", "c"] == parse_ids(["a", " b", "c"], None)
    release = RELEASES["pythia-70m-deduped-res-sm"]
    # "all": the SAEs the verdict accepts; the embeddings' (blocks.0.hook_resid_pre) cannot load
    assert len(release.sae_ids) == 7 and "blocks.0.hook_resid_pre" in release.sae_ids
    assert parse_ids("all", release) == [i for i in release.sae_ids
                                         if i != "blocks.0.hook_resid_pre"]
    with pytest.raises(HubError, match="needs a release"):
        parse_ids("all", None)
    with pytest.raises(HubError, match="at least one"):
        parse_ids(" , ", None)
