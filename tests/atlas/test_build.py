"""build_atlas on the tiny model: what it records, and a subset of layers."""


from sae_core.atlas.build import build_atlas
from sae_core.atlas.layout import load_atlas, read_info
from sae_core.config import BuildConfig, TrainConfig
from tests.conftest import tiny_lm


def test_the_build_records_its_settings_and_metrics(tiny_atlas):
    info = read_info(tiny_atlas)
    assert info.seq_len == 16 and info.heldout_windows == 8
    assert list(info.hookpoints) == ["layers.0", "layers.1", "layers.2"]
    _, metrics, saes, _ = load_atlas(tiny_atlas)
    for h, m in metrics.items():
        assert m["fvu"] >= 0 and m["l0"] <= saes[h].cfg.k and m["heldout_tokens"] > 0
        assert m["train_tokens"] > 0 and m["dropped_tokens"] >= 0
        assert saes[h].metadata["median_norm"] > 0 and saes[h].cfg.d_sae == 2 * 32


def test_a_subset_of_layers(tmp_path, tiny_atlas):
    corpus = read_info(tiny_atlas).corpus
    cfg = TrainConfig(expansion=2, k=4, batch_tokens=64, lm_batch_tokens=64, bf16=False,
                      max_tokens=256)
    out = build_atlas(tmp_path / "two", lm=tiny_lm(), cfg=cfg,
                      data=BuildConfig(corpus=corpus, layers=(0, 2), seq_len=16, held_out=8))
    info = read_info(out)
    assert list(info.hookpoints) == ["layers.0", "layers.2"] and info.lm_tokens == 256
    assert sorted(p.name for p in out.iterdir()) == ["atlas.json", "layers.0", "layers.2",
                                                      "metrics.json"]
