"""Export in the SAELens layout (bit-identical round trip) and push, with a fake Hub API."""

from dataclasses import replace

import pytest
import torch
from huggingface_hub import ModelCard

from sae_core.atlas.layout import load_atlas
from sae_core.hub import export as hub_export
from sae_core.hub.fetch import HubError
from sae_core.hub.load import load_pretrained
from tests.hub.repos import put_repo
from ui.serving import session


def test_export_round_trip_is_bit_identical(tmp_path, tiny_atlas):
    out = hub_export.export_saelens(tiny_atlas, tmp_path / "export", repo_id="me/tiny-saes")
    info, metrics, saes, _ = load_atlas(tiny_atlas)
    card = (out / "README.md").read_text()
    assert "library_name: saelens" in card and "tiny-llama" in card
    parsed = ModelCard.load(out / "README.md")
    assert parsed.data.tags == list(hub_export.CARD_TAGS) and parsed.data.base_model is None
    assert str(parsed) == card  # the front matter reads back as it was written
    assert 'SAE.from_pretrained("me/tiny-saes", "layers.0")' in card
    for h, sae in saes.items():
        row = next(line for line in card.splitlines() if line.startswith(f"| `{h}`"))
        assert f"| {sae.cfg.d_sae} | {sae.cfg.k} | {metrics[h]['fvu']:.4f} |" in row
    assert f"{info.lm_tokens:,} tokens" in card
    files = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert set(files) == {"README.md"} | {f"{h}/{f}" for h in saes
                                          for f in ("cfg.json", "sae_weights.safetensors")}
    cache = put_repo(tmp_path / "cache", "me/tiny-saes", files)
    pset = load_pretrained("me/tiny-saes", list(saes), lm=session.model("tiny-llama"),
                           cache_dir=cache)
    assert pset.warnings == () and list(pset.saes) == list(saes)
    for h, sae in saes.items():
        back = pset.saes[h]
        assert back.cfg == sae.cfg
        for (name, a), b in zip(sae.named_parameters(), back.parameters(), strict=True):
            assert torch.equal(a, b), (h, name)
    with pytest.raises(HubError, match="not empty"):
        hub_export.export_saelens(tiny_atlas, out)


def test_push_needs_a_token_and_uploads_the_folder(tmp_path, tiny_atlas, monkeypatch):
    out = hub_export.export_saelens(tiny_atlas, tmp_path / "export")
    monkeypatch.setattr(hub_export, "get_token", lambda: None)
    with pytest.raises(HubError, match="no Hugging Face token is configured"):
        hub_export.push_to_hub(out, "me/tiny-saes")
    with pytest.raises(HubError, match="not an exported SAE set"):
        hub_export.push_to_hub(tmp_path, "me/tiny-saes", token="t")
    calls = []

    class FakeApi:  # records what would be sent; nothing leaves the machine
        def __init__(self, token):
            calls.append(("token", token))

        def create_repo(self, repo_id, **kw):
            calls.append(("create", repo_id, kw))

        def upload_folder(self, **kw):
            calls.append(("upload", kw))
            return type("Commit", (), {"commit_url": "https://hub/commit/1"})()

    monkeypatch.setattr(hub_export, "HfApi", FakeApi)
    assert hub_export.push_to_hub(out, "me/tiny-saes", token="secret") == "https://hub/commit/1"
    assert calls[0] == ("token", "secret") and calls[1][1] == "me/tiny-saes"
    assert calls[2][1]["folder_path"] == out and calls[2][1]["repo_id"] == "me/tiny-saes"


@pytest.mark.parametrize("model, base", [
    ("HuggingFaceTB/SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"),
    ("tiny-llama", None), ("/models/llama", None), ("./org/name", None), ("org/bad--name", None),
])
def test_model_card_names_a_hub_base_model_only(tiny_atlas, model, base):
    info, metrics, saes, _ = load_atlas(tiny_atlas)
    cfgs = {h: sae.cfg for h, sae in saes.items()}
    card = ModelCard(str(hub_export.model_card(replace(info, model=model), metrics, cfgs, "me/x")))
    assert card.data.base_model == base and card.data.library_name == "saelens"
    assert card.data.tags == list(hub_export.CARD_TAGS)
    assert card.text.startswith(f"# Sparse autoencoders for {model}\n")
    assert hub_export.ATLAS_REPO_ENV not in card.text  # an exported set is not an atlas
    atlas = hub_export.model_card(info, metrics, cfgs, "me/x",
                                  atlas={"layer map": "`layer_map.json`, counts"})
    atlas = ModelCard(str(atlas))
    assert atlas.data.tags == [*hub_export.CARD_TAGS, hub_export.ATLAS_TAG]
    assert "- **layer map**: `layer_map.json`, counts" in atlas.text
    assert "SAE_ATLAS_REPO=me/x python app.py" in atlas.text
