"""The one SAELens config reader and writer, and the one hook-name map, both ways round."""

import pytest

from sae_core.config import SaeConfig
from sae_core.saelens import (
    DEFAULT_K,
    TL_HOOKS,
    SuiteHook,
    hook_of,
    sae_config_from_saelens,
    sae_hookpoint,
    saelens_cfg,
    tl_hook,
)


@pytest.mark.parametrize("layer", [0, 3, 17])
@pytest.mark.parametrize("sub", sorted(TL_HOOKS))
def test_the_hook_name_map_reads_back_what_it_writes(layer, sub):
    hookpoint = f"layers.{layer}" + (f".{sub}" if sub else "")
    assert tl_hook(hookpoint) == f"blocks.{layer}.{TL_HOOKS[sub]}"
    if sub == "mlp_in":  # a transcoder's input: read with what it predicts
        assert hook_of(tl_hook(hookpoint), tl_hook(f"layers.{layer}.mlp")) == \
            SuiteHook(f"layers.{layer}.mlp", hookpoint)
        with pytest.raises(ValueError, match="load it as a transcoder"):
            sae_hookpoint(tl_hook(hookpoint))
    else:
        assert sae_hookpoint(tl_hook(hookpoint)) == hookpoint


CONFIGS = [
    SaeConfig(d_in=16, d_sae=64, architecture="topk", k=7, hookpoint="layers.2",
              model_name="m"),
    SaeConfig(d_in=16, d_sae=64, architecture="relu", k=12, hookpoint="layers.2.attn_z",
              apply_b_dec_to_input=False),
    SaeConfig(d_in=16, d_sae=64, architecture="jumprelu", hookpoint="layers.0.resid_mid"),
    *[SaeConfig(d_in=16, d_sae=64, architecture=arch, k=5, hookpoint="layers.4.mlp",
                hookpoint_in="layers.4.mlp_in", d_out=24, skip=skip,
                apply_b_dec_to_input=False)
      for arch in ("topk", "relu", "jumprelu") for skip in (False, True)],
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.architecture}-{c.hookpoint}-{c.skip}")
def test_the_reader_reads_back_what_the_writer_writes(cfg):
    raw = saelens_cfg(cfg)
    assert sae_config_from_saelens(raw) == cfg
    # SAELens's own fields alone (TransformerLens hooks, no sae_atlas_*) say the same
    raw["metadata"] = {k: v for k, v in raw["metadata"].items() if not k.startswith("sae_")}
    assert sae_config_from_saelens(raw) == cfg


def test_k_comes_from_the_config_else_the_one_default():
    raw = {"d_in": 8, "d_sae": 16, "architecture": "standard",
           "metadata": {"hook_name": "blocks.1.hook_resid_post"}}
    assert sae_config_from_saelens(raw).k == DEFAULT_K
    assert sae_config_from_saelens(raw | {"metadata": raw["metadata"] | {"k": 3}}).k == 3
    assert sae_config_from_saelens(raw | {"architecture": "topk", "k": 9}).k == 9
    with pytest.raises(ValueError, match="without k"):
        sae_config_from_saelens(raw | {"architecture": "topk"})


@pytest.mark.parametrize(("bad", "error", "match"), [
    ({"architecture": "gated"}, ValueError, "unsupported architecture 'gated'"),
    ({"normalize_activations": "layer_norm"}, ValueError, "layer_norm"),
    ({"metadata": {"hook_name": "blocks.0.hook_resid_pre"}}, ValueError, "token embeddings"),
    ({"metadata": {"hook_name": "blocks.1.hook_mlp_in"}}, ValueError, "as a transcoder"),
    ({"d_sae": None}, TypeError, "NoneType"),
])
def test_what_the_reader_cannot_read_is_refused(bad, error, match):
    raw = {"d_in": 8, "d_sae": 16, "architecture": "standard",
           "metadata": {"hook_name": "blocks.1.hook_resid_post"}} | bad
    with pytest.raises(error, match=match):
        sae_config_from_saelens(raw)
    with pytest.raises(TypeError, match="JSON object"):
        sae_config_from_saelens([raw])
