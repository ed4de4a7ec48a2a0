import json

import pytest
import torch

from sae_core.config import SaeConfig
from sae_core.sae import Sae


def _sae(arch="topk", d=16, n=128, k=8, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(300, d) * 2 + 0.5
    sae = Sae.init_from_data(SaeConfig(d_in=d, d_sae=n, k=k, architecture=arch,
                                       hookpoint="layers.3", model_name="tiny"), x, seed=seed)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3)
    return sae, x


def test_init_from_data():
    sae, x = _sae()
    torch.testing.assert_close(sae.b_dec.detach(), x.mean(0))
    torch.testing.assert_close(sae.W_dec.norm(dim=-1).detach(), torch.ones(128))
    torch.testing.assert_close(sae.W_enc.detach(), sae.W_dec.detach().T)
    half = Sae.init_from_data(sae.cfg, x, encoder_scale=0.5)
    torch.testing.assert_close(half.W_enc.detach(), 0.5 * half.W_dec.detach().T)


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_forward_is_decode_of_encode(arch):
    sae, x = _sae(arch)
    out = sae(x)
    torch.testing.assert_close(out.x_hat, sae.decode(sae.encode(x)))
    if arch == "topk":
        assert ((out.acts > 0).sum(-1) <= 8).all()
        vals, idx = sae.encode_topk(x)
        torch.testing.assert_close(sae.decode_sparse(vals, idx), out.x_hat, rtol=1e-5, atol=1e-5)
    assert (out.acts >= 0).all()


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_save_load_round_trip_is_bit_identical(tmp_path, arch):
    sae, x = _sae(arch)
    sae.save(tmp_path, extra_metadata={"median_norm": 3.5})
    loaded = Sae.load(tmp_path)
    assert loaded.cfg == sae.cfg
    assert loaded.metadata["median_norm"] == 3.5
    for (name, a), b in zip(sae.named_parameters(), loaded.parameters(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(loaded(x).x_hat, sae(x).x_hat)


def test_saved_layout_is_saelens(tmp_path):
    from safetensors.torch import load_file

    sae, _ = _sae()
    sae.save(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["k"] == 8 and cfg["d_sae"] == 128
    assert cfg["metadata"]["hook_name"] == "blocks.3.hook_resid_post"
    shapes = {k: tuple(v.shape) for k, v in load_file(tmp_path / "sae_weights.safetensors").items()}
    assert shapes == {"W_enc": (16, 128), "b_enc": (128,), "W_dec": (128, 16), "b_dec": (16,)}


def test_corrupt_or_truncated_weights_are_clear_errors(tmp_path):
    sae, _ = _sae()
    sae.save(tmp_path)
    weights = tmp_path / "sae_weights.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        Sae.load(tmp_path)
    weights.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        Sae.load(tmp_path)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="sae_weights"):
        Sae.load(tmp_path)


def test_shape_mismatch_and_bad_config(tmp_path):
    sae, _ = _sae()
    sae.save(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    (tmp_path / "cfg.json").write_text(json.dumps(cfg | {"d_in": 32}))
    with pytest.raises(ValueError, match="do not match"):
        Sae.load(tmp_path)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg | {"architecture": "gated"}))
    with pytest.raises(ValueError, match="unsupported architecture"):
        Sae.load(tmp_path)


def test_config_checks():
    with pytest.raises(ValueError, match="k must be"):
        SaeConfig(d_in=4, d_sae=8, k=9)
    with pytest.raises(ValueError, match="unknown architecture"):
        SaeConfig(d_in=4, d_sae=8, architecture="gated")


def test_load_refuses_what_it_would_read_wrongly(tmp_path):
    """Inputs that need a scale the folder lacks, and a config that is no JSON object, are
    clear errors, not an SAE that encodes wrongly."""
    from sae_core.atomic import CorruptFile

    sae, _ = _sae("relu")
    sae.save(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    (tmp_path / "cfg.json").write_text(json.dumps(cfg | {"normalize_activations":
                                                         "expected_average_only_in"}))
    with pytest.raises(ValueError, match="folds the input scale"):
        Sae.load(tmp_path)
    (tmp_path / "cfg.json").write_text(json.dumps([cfg]))
    with pytest.raises(CorruptFile, match="JSON object"):
        Sae.load(tmp_path)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    assert Sae.load(tmp_path).cfg == sae.cfg  # k=8 from metadata, not the default 32
