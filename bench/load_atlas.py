"""Which atlas bench/load.py serves: the tests' tiny one (`--smoke`), `--atlas`, the default
atlas, or a small one built for the run; and the feature index its pages read."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def tiny_atlas(root: Path) -> Path:
    """The tests' tiny random model and a 3-layer atlas of it (as tests/conftest.py builds)."""
    from sae_core.atlas.build import build_atlas
    from sae_core.config import BuildConfig, TrainConfig
    from tests.conftest import WORDS, tiny_lm
    from ui.serving import session

    corpus = root / "corpus.jsonl"
    lines = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(40)) for i in range(60)]
    corpus.write_text("\n".join(json.dumps({"text": t}) for t in lines))
    lm = tiny_lm()
    session.register_model(lm)
    cfg = TrainConfig(expansion=2, k=4, batch_tokens=64, lm_batch_tokens=64, bf16=False)
    return build_atlas(root / "tiny", data=BuildConfig(corpus=str(corpus), seq_len=16,
                                                       held_out=8), cfg=cfg, lm=lm)


def choose_atlas(args: argparse.Namespace, scratch: Path) -> tuple[Path, str]:
    """(atlas folder, how it was found) for the command line."""
    from sae_core.atlas.build import build_atlas
    from sae_core.atlas.layout import DEFAULT_ATLAS, is_built
    from sae_core.config import BuildConfig, TrainConfig

    if args.smoke:
        return tiny_atlas(scratch), "the tests' tiny random model (--smoke)"
    if args.atlas:
        return Path(args.atlas), f"--atlas {args.atlas}"
    if is_built(DEFAULT_ATLAS):
        return DEFAULT_ATLAS, f"{DEFAULT_ATLAS} (the default atlas)"
    small = DEFAULT_ATLAS.parent / "load-small"
    if not is_built(small):
        print(f"no default atlas: building {small} (3 layers, 16k tokens)", flush=True)
        build_atlas(small, data=BuildConfig(layers=(0, 10, 20)),
                    cfg=TrainConfig(max_tokens=16_384))
    return small, f"{small} (small atlas of the embedded model, built for this run)"


def with_index(folder: Path, tokens: int) -> None:
    """Build the feature index the feature pages read, when the atlas has none."""
    from sae_core.explore.feature_index import ensure_feature_index, has_feature_index
    from sae_core.explore.feature_stats import IndexConfig
    from ui.serving import session

    if has_feature_index(folder):
        return
    print(f"no feature index: building one of {tokens} tokens", flush=True)
    ensure_feature_index(folder, lm=session.open_atlas(folder).lm,
                         cfg=IndexConfig(max_tokens=tokens))
