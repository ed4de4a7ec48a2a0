"""Command line: `python -m sae_core train ...` and `python -m sae_core eval ...`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .activations import outlier_factor_of
from .atlas.build import build_atlas
from .atlas.evaluate import evaluate_atlas
from .atlas.layout import DEFAULT_ATLAS, check_fits, load_atlas, read_info, read_metrics
from .cli_options import add_config_args, config_from_args
from .config import BuildConfig, TrainConfig
from .corpus import load_texts, split_windows, token_windows
from .lm import load_lm
from .norms import medians_of
from .progress import console_report


def table(metrics: dict[str, dict]) -> str:
    rows = ["| hookpoint | FVU | L0 | dead % (train) | dead % (held-out) | CE loss recovered |",
            "|---|---|---|---|---|---|"]
    for h, m in metrics.items():
        rows.append(f"| {h} | {m['fvu']:.3f} | {m['l0']:.1f} | "
                    f"{100 * m.get('dead_frac_train', float('nan')):.2f} | "
                    f"{100 * m['dead_frac_heldout']:.2f} | {m['ce_recovered']:.3f} |")
    return "\n".join(rows)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sae_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one SAE per layer in one pass over a corpus")
    train.add_argument("--out", type=Path, default=DEFAULT_ATLAS, help="output folder")
    add_config_args(train, BuildConfig)
    add_config_args(train, TrainConfig, aliases={"architecture": "--arch"})
    ev = sub.add_parser("eval", help="held-out metrics of a built atlas")
    ev.add_argument("--atlas", type=Path, default=DEFAULT_ATLAS)
    ev.add_argument("--model", default="embedded")
    ev.add_argument("--corpus", default="default")
    ev.add_argument("--windows", type=int, default=64, help="held-out windows to evaluate on")
    return parser


def train(args: argparse.Namespace) -> None:
    out = build_atlas(args.out, data=config_from_args(BuildConfig, args),
                      cfg=config_from_args(TrainConfig, args), report=console_report())
    info = read_info(out)
    print(f"\nbuilt {out} in {info['total_seconds']:.0f} s "
          f"({info['train_tok_s']:.0f} LM tokens/s while training)")
    print(table(read_metrics(out)))


def evaluate(args: argparse.Namespace) -> None:
    info, _, saes = load_atlas(args.atlas)
    lm = load_lm(args.model)
    check_fits(saes, lm)
    windows = token_windows(lm.tokenizer, load_texts(args.corpus), info["seq_len"])
    _, test_w = split_windows(windows, args.windows)
    print(table(evaluate_atlas(lm, saes, medians_of(saes), test_w,
                               outlier_factor=outlier_factor_of(info), report=console_report())))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        (train if args.command == "train" else evaluate)(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
