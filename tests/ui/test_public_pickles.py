"""Public mode reaches the loader: the SAEs tab passes `public=policy.public` to
`load_pretrained_atlas`, so torch pickles open in public mode only for the releases on the
allow list (hub/torch_weights.PICKLE_ALLOW_LIST), and the loader refuses the others."""

import gradio as gr
import pytest

from sae_core.hub.fetch import HubError
from sae_core.hub.load import load_sae
from sae_core.hub.torch_weights import PICKLE_ALLOW_LIST
from ui.saes import tab as saes_ui
from ui.serving import public, session
from ui.serving.public import Policy

PUBLIC, PRIVATE = Policy.for_mode(True), Policy.for_mode(False)


@pytest.mark.parametrize("policy", [PUBLIC, PRIVATE], ids=["public", "private"])
def test_hub_load_passes_the_mode_to_the_loader(policy, monkeypatch):
    seen = []

    def recorded(*args, **kwargs):
        seen.append(kwargs.get("public"))
        raise HubError("recorded")

    monkeypatch.setattr(public, "_current", policy)
    monkeypatch.setattr(saes_ui, "load_pretrained_atlas", recorded)
    monkeypatch.setattr(session, "model", lambda name: None)
    with pytest.raises(gr.Error, match="recorded"):
        saes_ui.hub_load("pythia-70m-deduped-res-sm", "blocks.0.hook_resid_post",
                         "EleutherAI/pythia-70m-deduped", "", None,
                         progress=lambda *a, **k: 0)
    assert seen == [policy.public]


def test_public_loads_open_pickles_only_for_allowed_releases(tmp_path):
    """The check runs before any file is fetched: a release off the list is refused with the
    reason; one on it (or private mode) goes on to the files (absent here)."""
    kw = dict(layout="qwen_scope", cache_dir=tmp_path, hook="blocks.3.hook_resid_post")
    with pytest.raises(HubError, match="opens pickles only for"):
        load_sae("Qwen/SAE-Res-Qwen3-8B-Base-W64K-L0_50", "layer3.sae.pt", public=True,
                 release="qwen-scope-3-8b-base-w64k-l50", **kw)
    allowed = sorted(PICKLE_ALLOW_LIST)[0]
    for public_mode, release in ((True, allowed), (False, "qwen-scope-3-8b-base-w64k-l50")):
        with pytest.raises(HubError) as err:
            load_sae("Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50", "layer3.sae.pt",
                     public=public_mode, release=release, **kw)
        assert "opens pickles only" not in str(err.value)
