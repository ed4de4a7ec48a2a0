"""Feature index build, feature page and live view timings on the default atlas.

1. Index build (`build_feature_index`, the same call `ensure_feature_index` makes): one pass
   over the index windows (held-out first, then training windows) with all 30 SAEs, then
   the per-layer index. Written into the atlas when it has none yet, else into a temporary
   folder. Baseline in the same run: a plain bf16 forward of the full model on 16 of the
   same windows, as tokens/s.
2. Coverage: features with >= 20 contexts in the index; with --coverage, also for the
   held-out windows alone and other prefixes of the index windows (a second pass).
3. Feature page data (`feature_page`) for random alive features of random layers, and the
   whole tab callback (page data + figures + HTML); target under 200 ms.
4. Live view (`sae_core.explore.live.live_view`) of a 256-token text over all 30 layers; target
   under 1.5 s; baseline: the captured forward alone.

    flock /tmp/bench.lock .venv/bin/python bench/features.py [--atlas DIR] [--coverage]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import ROOT, load_lm, load_texts, token_windows

from sae_core.activations import layer_of
from sae_core.atlas.layout import DEFAULT_ATLAS, heldout_ids, load_atlas
from sae_core.explore.feature_index import (
    build_feature_index,
    collect_codes,
    has_feature_index,
    index_windows,
)
from sae_core.explore.feature_page import feature_page, open_index
from sae_core.explore.feature_stats import IndexConfig, index_layer
from sae_core.explore.live import live_view
from sae_core.hooks import run_captured
from sae_core.norms import medians_of
from ui.features.tab import page_outputs
from ui.serving import session


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def bench_index(lm, saes, info, atlas: Path, cfg: IndexConfig) -> tuple[dict, float, tuple]:
    """Build the index once (into the atlas if it has none); (meta, seconds, windows)."""
    windows = token_windows(lm.tokenizer, load_texts(info.corpus), info.seq_len)
    chosen, source = index_windows(windows, heldout_ids(info, windows), cfg.max_tokens)
    n_tok = chosen.numel()
    _, fwd_s = timed(run_captured, lm, chosen[:16], [f"layers.{lm.n_layers - 1}"])
    fwd_tok_s = 16 * chosen.shape[1] / fwd_s
    installed = not has_feature_index(atlas)
    with tempfile.TemporaryDirectory() as tmp:
        out = atlas if installed else Path(tmp)
        meta, index_s = timed(build_feature_index, lm, saes, medians_of(saes), chosen, out,
                              outlier_factor=info.outlier_factor, cfg=cfg, source=source)
    print(f"index: {n_tok:,} tokens ({source}), {index_s:.1f} s "
          f"(pass {meta['pass_seconds']:.1f} s) = {n_tok / index_s:,.0f} tokens/s for 30 "
          f"layers; plain bf16 forward {fwd_tok_s:,.0f} tokens/s "
          f"(index at {n_tok / index_s / fwd_tok_s:.2f}x of it); "
          f"{'written into the atlas' if installed else 'atlas already had one: temp folder'}")
    layers = meta["layers"]
    with_20 = [m["with_20"] / saes[h].cfg.d_sae for h, m in layers.items()]
    print(f"features with >= 20 contexts: mean {100 * statistics.mean(with_20):.1f}%, "
          f"min {100 * min(with_20):.1f}% over layers; dead: "
          f"{sum(m['dead'] for m in layers.values())} of "
          f"{sum(saes[h].cfg.d_sae for h in layers)}")
    return meta, index_s, (windows, chosen, source)


def coverage(lm, saes, info, chosen, source: dict, cfg: IndexConfig) -> None:
    """Features with >= 20 contexts when only a prefix of the index windows is indexed."""
    codes = collect_codes(lm, saes, medians_of(saes), chosen,
                          outlier_factor=info.outlier_factor, cfg=cfg)
    seq = chosen.shape[1]
    for n_win in (source["heldout_windows"], 2 * source["heldout_windows"], len(chosen)):
        share = {h: float((index_layer(v[:n_win * seq], i[:n_win * seq], saes[h].cfg.d_sae,
                                       seq, cfg)
                           ["n_ctx"] >= 20).float().mean()) for h, (v, i, _) in codes.items()}
        worst = min(share, key=share.get)
        print(f"first {n_win} windows ({n_win * seq:,} tokens): features with >= 20 "
              f"contexts: mean {100 * statistics.mean(share.values()):.1f}%, min "
              f"{100 * share[worst]:.1f}% ({worst})")


def bench_pages(loaded, atlas: Path, n_pages: int) -> float:
    """Median ms of a feature page's data over random alive features."""
    rng = random.Random(0)
    picks = []
    for _ in range(n_pages):
        h = rng.choice(loaded.hookpoints)
        alive = open_index(atlas).layer_stats(h)["n_fire"].nonzero().squeeze(1).tolist()
        picks.append((h, rng.choice(alive)))
    page_ms = [1000 * timed(feature_page, loaded, h, f)[1] for h, f in picks]
    tab_ms = [1000 * timed(page_outputs, str(atlas), layer_of(h), f)[1] for h, f in picks[:20]]
    page = statistics.median(page_ms)
    print(f"feature page data: median {page:.1f} ms, max {max(page_ms):.1f} ms "
          f"({len(page_ms)} pages); with figures and HTML: median "
          f"{statistics.median(tab_ms):.1f} ms, max {max(tab_ms):.1f} ms")
    return page


def bench_live(loaded, text: str) -> float:
    """Median seconds of a live view, against the captured forward alone."""
    lm = loaded.lm
    view, _ = timed(live_view, loaded, text)  # warm-up
    live_s = statistics.median(timed(live_view, loaded, text)[1] for _ in range(5))
    ids = torch.tensor([[lm.tokenizer.bos_token_id, *view.token_ids]])
    fwd_live = statistics.median(timed(run_captured, lm, ids, loaded.hookpoints)[1]
                                 for _ in range(5))
    print(f"live view: {view.n_tokens} tokens x {len(view.hookpoints)} layers, median "
          f"{1000 * live_s:.0f} ms; the captured forward alone {1000 * fwd_live:.0f} ms "
          f"({live_s / fwd_live:.2f}x)")
    return live_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=60)
    parser.add_argument("--atlas", type=Path, default=ROOT / DEFAULT_ATLAS)
    parser.add_argument("--coverage", action="store_true",
                        help="coverage for prefixes of the index windows (a second pass)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    info, _, saes, _ = load_atlas(args.atlas)
    lm = load_lm()
    session.register_model(lm)
    cfg = IndexConfig()
    _, index_s, (windows, chosen, source) = bench_index(lm, saes, info, args.atlas, cfg)
    if args.coverage:
        coverage(lm, saes, info, chosen, source, cfg)
    loaded = session.open_atlas(args.atlas)
    page = bench_pages(loaded, args.atlas, args.pages)
    live_s = bench_live(loaded, lm.tokenizer.decode(windows[-1, 1:]))
    print(f"RESULT index_s={index_s:.1f} page_ms={page:.1f} live_ms={1000 * live_s:.0f}")


if __name__ == "__main__":
    main()
