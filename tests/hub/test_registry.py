"""Known releases map onto our hookpoints."""

import pytest

from sae_core.hub.fetch import HubError
from sae_core.hub.formats import hookpoint_of
from sae_core.hub.load import load_pretrained
from sae_core.hub.registry import RELEASES, same_model


def test_registry_releases_map_onto_hookpoints():
    for release in RELEASES.values():
        for sae_id in release.sae_ids:
            hookpoint_of(sae_id)
    assert RELEASES["gpt2-small-res-jb"].repo_id == "jbloom/GPT2-Small-SAEs-Reformatted"
    assert RELEASES["pythia-70m-deduped-res-sm"].path_of("blocks.3.hook_resid_post") == "3-res-sm"
    assert same_model("gpt2-small", "gpt2") and not same_model("gpt2", "")
    with pytest.raises(HubError, match="not in the local cache"):
        load_pretrained("pythia-70m-deduped-res-sm", "all", cache_dir="/nonexistent-cache")
    with pytest.raises(HubError, match=r"has no SAE 'blocks\.0\.hook_resid_pre'"):
        load_pretrained("gpt2-small-res-jb", "blocks.0.hook_resid_pre")
