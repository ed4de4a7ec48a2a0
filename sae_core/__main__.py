"""Command line: `python -m sae_core train ...` and `python -m sae_core eval ...`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from .atlas import (
    DEFAULT_ATLAS,
    build_atlas,
    check_fits,
    evaluate_atlas,
    load_atlas,
    medians_of,
)
from .config import TrainConfig
from .corpus import load_texts, split_windows, token_windows
from .lm import load_lm


def _layers(text: str) -> list[int] | None:
    if text == "all":
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError as err:
        msg = f"layers must be 'all' or e.g. '0,5,12', got {text!r}"
        raise argparse.ArgumentTypeError(msg) from err


def _progress_bar():
    bar = tqdm(total=1000, unit="‰", bar_format="{l_bar}{bar}| {elapsed}<{remaining}")

    def report(message: str, fraction: float) -> None:
        bar.set_description(message)
        bar.update(round(fraction * 1000) - bar.n)

    return report


def table(metrics: dict[str, dict]) -> str:
    rows = ["| hookpoint | FVU | L0 | dead % (train) | dead % (held-out) | CE loss recovered |",
            "|---|---|---|---|---|---|"]
    for h, m in metrics.items():
        rows.append(f"| {h} | {m['fvu']:.3f} | {m['l0']:.1f} | "
                    f"{100 * m.get('dead_frac_train', float('nan')):.2f} | "
                    f"{100 * m['dead_frac_heldout']:.2f} | {m['ce_recovered']:.3f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sae_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one SAE per layer in one pass over a corpus")
    train.add_argument("--model", default="embedded",
                       help="'embedded' (SmolLM2-135M-Instruct, offline), a folder or a Hub id")
    train.add_argument("--corpus", default="default",
                       help="'default' (assets/corpus.jsonl), a .txt/.jsonl file or a Hub dataset")
    train.add_argument("--layers", type=_layers, default=None, help="'all' or e.g. '0,5,12'")
    train.add_argument("--out", type=Path, default=DEFAULT_ATLAS, help="output folder")
    d = TrainConfig()  # one source for defaults
    train.add_argument("--arch", choices=["topk", "relu"], default=d.architecture)
    train.add_argument("--k", type=int, default=d.k)
    train.add_argument("--k-start", type=int, default=d.k_start, help="anneal k from this value")
    train.add_argument("--expansion", type=int, default=d.expansion,
                       help="latents = expansion * d_model")
    train.add_argument("--lr", type=float, default=d.lr)
    train.add_argument("--l1", type=float, default=d.l1_coeff, help="L1 coefficient (relu)")
    train.add_argument("--batch-tokens", type=int, default=d.batch_tokens,
                       help="activations per SAE optimizer step")
    train.add_argument("--lm-batch-tokens", type=int, default=d.lm_batch_tokens,
                       help="LM tokens per forward pass")
    train.add_argument("--max-tokens", type=int, default=d.max_tokens,
                       help="train on at most this many LM tokens (0: one pass over the corpus)")
    train.add_argument("--seq-len", type=int, default=256)
    train.add_argument("--seed", type=int, default=d.seed)
    train.add_argument("--fp32", action="store_true", help="no bf16 anywhere (slower)")
    ev = sub.add_parser("eval", help="held-out metrics of a built atlas")
    ev.add_argument("--atlas", type=Path, default=DEFAULT_ATLAS)
    ev.add_argument("--model", default="embedded")
    ev.add_argument("--corpus", default="default")
    ev.add_argument("--windows", type=int, default=64, help="held-out windows to evaluate on")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    try:
        if args.command == "train":
            cfg = TrainConfig(
                architecture=args.arch, k=args.k, k_start=args.k_start, expansion=args.expansion,
                lr=args.lr, l1_coeff=args.l1, batch_tokens=args.batch_tokens,
                lm_batch_tokens=args.lm_batch_tokens, seed=args.seed,
                bf16=not args.fp32, max_tokens=args.max_tokens or None,
            )
            out = build_atlas(args.out, model=args.model, corpus=args.corpus, layers=args.layers,
                              cfg=cfg, seq_len=args.seq_len, report=_progress_bar())
            info = json.loads((out / "atlas.json").read_text())
            print(f"\nbuilt {out} in {info['total_seconds']:.0f} s "
                  f"({info['train_tok_s']:.0f} LM tokens/s while training)")
            print(table(json.loads((out / "metrics.json").read_text())))
        else:
            info, _, saes = load_atlas(args.atlas)
            lm = load_lm(args.model)
            check_fits(saes, lm)
            windows = token_windows(lm.tokenizer, load_texts(args.corpus), info["seq_len"])
            _, test_w = split_windows(windows, args.windows)
            medians = medians_of(saes)
            factor = info["train_cfg"]["outlier_factor"]
            print(table(evaluate_atlas(lm, saes, medians, test_w, outlier_factor=factor,
                                       report=_progress_bar())))
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
