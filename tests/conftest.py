"""Tiny random models built from a config: fast, offline, deterministic."""

import os

# The suite needs no network: no Hub look-ups, no Gradio analytics.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest
from transformers import AutoTokenizer

from sae_core.atlas.build import build_atlas
from sae_core.config import BuildConfig, TrainConfig
from sae_core.explore.evidence import ensure_layer_evidence
from sae_core.lm import LM, embedded_model_dir
from tests.tiny import (  # noqa: F401 (tests import them here)
    WORDS,
    tiny_lm,
    tiny_tokenizer,
    write_tiny_corpus,
)
from ui.serving import session


@pytest.fixture
def lm() -> LM:
    return tiny_lm()


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory):
    """The tiny corpus (.jsonl) the tiny atlas is built from."""
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus") / "corpus.jsonl")


@pytest.fixture(scope="session")
def tiny_atlas(tmp_path_factory):
    """A finished atlas (3 layers, SAEs, metrics, layer map and the rest of the layer evidence)
    of the tiny model."""
    root = tmp_path_factory.mktemp("atlas")
    corpus = write_tiny_corpus(root / "corpus.jsonl")
    lm = tiny_lm()
    session.register_model(lm)  # open_atlas finds it by name instead of loading from the Hub
    cfg = TrainConfig(expansion=2, k=4, batch_tokens=64, lm_batch_tokens=64, bf16=False)
    out = build_atlas(root / "tiny", data=BuildConfig(corpus=str(corpus), seq_len=16, held_out=8),
                      cfg=cfg, lm=lm)
    ensure_layer_evidence(out, lm=lm)
    return out


@pytest.fixture(scope="session")
def smol_tokenizer():
    """The embedded model's real tokenizer (converts the model once, ~20 s, cached)."""
    return AutoTokenizer.from_pretrained(str(embedded_model_dir()))


@pytest.fixture(scope="session")
def loaded(tiny_atlas):
    """The tiny atlas with its SAEs and model, as the app serves it."""
    return session.open_atlas(tiny_atlas)


def pytest_terminal_summary(terminalreporter):
    from tests.counts import COUNTS

    for what, n in sorted(COUNTS.items()):
        terminalreporter.write_line(f"{what}: {n}")


def restamp(folder) -> None:
    """Record the SAE files of an atlas folder as its own again, after a test changed them
    on purpose (a build records their digests; changed files are refused otherwise)."""
    from dataclasses import replace

    from sae_core.atlas.fingerprint import digest_of, sae_file_digests
    from sae_core.atlas.info import info_json
    from sae_core.atlas.layout import INFO_FILE, read_info
    from sae_core.atomic import write_json

    info = read_info(folder)
    files = sae_file_digests(folder, info.hookpoints)
    write_json(folder / INFO_FILE, info_json(replace(info, sae_files=files,
                                                     sae_fingerprint=digest_of(files))))


def save_as_atlas(folder, saes) -> str:
    """Write hand-made SAEs as a minimal atlas folder (SAEs and atlas.json: enough for
    derived files to name their fingerprint); returns that fingerprint."""
    from sae_core.atlas.info import AtlasInfo, info_json
    from sae_core.atlas.layout import INFO_FILE, current_fingerprint
    from sae_core.atomic import write_json

    for h, sae in saes.items():
        sae.save(folder / h)
    write_json(folder / INFO_FILE, info_json(AtlasInfo(model="hand-made", hookpoints=tuple(saes))))
    return current_fingerprint(folder)
