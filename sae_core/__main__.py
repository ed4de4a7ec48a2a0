"""Command line: `python -m sae_core train ...`, `python -m sae_core eval ...`,
`python -m sae_core push ...` (publish a built atlas to the Hugging Face Hub) and
`python -m sae_core releases [--unsupported]` (which known Hub releases load).

Several processes: `torchrun --nproc_per_node N -m sae_core train --parallel data|layers ...`
(train/ranks.py); rank 0 writes and prints."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .atlas.build import build_atlas
from .atlas.evaluate import evaluate_atlas
from .atlas.layout import (
    ATLAS_ROOT,
    DEFAULT_ATLAS,
    METRICS_FILE,
    fit_to,
    forget_reads,
    heldout_ids,
    is_built,
    load_atlas,
    read_info,
    read_metrics,
)
from .atlas.writing import atlas_lock
from .atomic import write_json
from .cli_options import add_config_args, config_from_args
from .config import BuildConfig, RunConfig, TrainConfig
from .corpus import load_texts, token_windows
from .explore.one_pass import after_training
from .hub.atlas_repo import push_atlas
from .hub.registry import RELEASES
from .hub.releases import summarise, summary_lines
from .jobs.stages import STAGES, complete_atlas, ready_parts
from .lm import load_named
from .metrics import format_with_error
from .model_controls import lm_for_atlas
from .norms import medians_of
from .precision import DEVICES
from .progress import console_report


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.2f}"  # eval has no training counts


def table(metrics: dict[str, dict]) -> str:
    rows = ["| hookpoint | FVU | L0 | dead % (train) | dead % (held-out) | CE loss recovered "
            "| CE recovered (mean abl.) | KL (nats/token) | left out (pos 0 / massive) |",
            "|---|---|---|---|---|---|---|---|---|"]
    mean_se = "ce_recovered_mean_se"
    for h, m in metrics.items():
        rows.append(f"| {h} | {m['fvu']:.3f} | {m['l0']:.1f} | "
                    f"{_percent(m.get('dead_frac_train'))} | "
                    f"{100 * m['dead_frac_heldout']:.2f} | "
                    f"{format_with_error(m['ce_recovered'], m.get('ce_recovered_se'))} | "
                    f"{format_with_error(m.get('ce_recovered_mean'), m.get(mean_se))}"
                    f" | {format_with_error(m.get('kl'), m.get('kl_se'))} | "
                    f"{m.get('left_out_first', 'n/a')} / {m.get('left_out_outliers', 'n/a')} |")
    return "\n".join(rows)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sae_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one SAE per layer in one pass over a corpus")
    train.add_argument("--out", type=Path, default=DEFAULT_ATLAS, help="output folder")
    add_config_args(train, BuildConfig)
    add_config_args(train, TrainConfig, aliases={"architecture": "--arch"})
    add_config_args(train, RunConfig)
    ev = sub.add_parser("eval", help="held-out metrics of a built atlas")
    ev.add_argument("--atlas", type=Path, default=DEFAULT_ATLAS)
    ev.add_argument("--windows", type=int, default=None,
                    help="evaluate on the first N of the atlas's held-out windows (default all)")
    ev.add_argument("--save", action="store_true",
                    help="write the numbers into the atlas's metrics.json (all windows only)")
    ev.add_argument("--device", default="cpu",
                    help=f"where the model and SAEs run: {', '.join(DEVICES)} (default cpu)")
    push = sub.add_parser("push", help="publish a built atlas (SAEs, layer map, feature index) "
                          "to a Hugging Face Hub repo; needs HF_TOKEN or `hf auth login`")
    push.add_argument("--atlas", required=True,
                      help=f"an atlas name (a folder of {ATLAS_ROOT}) or an atlas folder")
    push.add_argument("--repo", required=True, help="the model repo, USER/REPO")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--revision", default=None, help="the branch to push to (default main)")
    rel = sub.add_parser("releases", help="how many releases and SAE ids of the known Hub "
                         "table (SAELens's) the app can load")
    rel.add_argument("--unsupported", action="store_true",
                     help="also list the ones it cannot load, grouped by reason")
    return parser


def train(args: argparse.Namespace) -> None:
    run = config_from_args(RunConfig, args)
    main_rank = os.environ.get("RANK", "0") == "0"
    out = build_atlas(args.out, data=config_from_args(BuildConfig, args),
                      cfg=config_from_args(TrainConfig, args), run=run,
                      report=console_report() if main_rank else None, after=after_training)
    if not main_rank:
        return
    info = read_info(out)
    print(f"\nbuilt {out} in {info.total_seconds:.0f} s "
          f"({info.train_tok_s:.0f} LM tokens/s while training)")
    print(table(read_metrics(out)))


def evaluate(args: argparse.Namespace) -> None:
    """Held-out metrics on the atlas's own model and held-out windows: never a window the
    SAEs were trained on."""
    info, _, saes, _ = load_atlas(args.atlas)
    lm = lm_for_atlas(load_named(info.model, device=args.device), info.control,
                      info.control_seed)
    fit_to(saes, lm)
    windows = token_windows(lm.tokenizer, load_texts(info.corpus), info.seq_len)
    ids = heldout_ids(info, windows)
    n = len(ids) if args.windows is None else args.windows
    if not 1 <= n <= len(ids):
        raise ValueError(f"--windows must be 1..{len(ids)}: the atlas holds out {len(ids)} "
                         "windows, and the others were trained on")
    if args.save and n != len(ids):
        raise ValueError("--save writes metrics.json, measured on every held-out window")
    metrics = evaluate_atlas(lm, saes, medians_of(saes), windows[ids[:n]],
                             outlier_factor=info.outlier_factor, report=console_report())
    print(table(metrics))
    if args.save:  # the training counts stay; the held-out numbers are replaced
        with atlas_lock(args.atlas):
            old = read_metrics(args.atlas)
            write_json(Path(args.atlas) / METRICS_FILE,
                       {h: old.get(h, {}) | m for h, m in metrics.items()})
        forget_reads(args.atlas)


def atlas_folder(name_or_folder: str) -> Path:
    """checkpoints/atlas/NAME for a bare NAME (unless only a folder of that name exists
    here), else the folder given."""
    named, given = ATLAS_ROOT / name_or_folder, Path(name_or_folder)
    bare = "/" not in name_or_folder and "\\" not in name_or_folder
    if bare and (named.is_dir() or not given.is_dir()):
        return named
    return given


def push(args: argparse.Namespace) -> None:
    folder = atlas_folder(args.atlas)
    if is_built(folder) and len(ready_parts(folder)) < len(STAGES):
        print(f"building what {folder} lacks first: a published atlas has every part")
        done = complete_atlas(folder, load_named(read_info(folder)["model"]), console_report())
        print(f"built {', '.join(done)}")
    url = push_atlas(folder, args.repo, private=args.private, revision=args.revision)
    print(f"pushed {args.atlas} to {args.repo}: {url}")


def releases(args: argparse.Namespace) -> None:
    print("\n".join(summary_lines(summarise(RELEASES.values()), args.unsupported)))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        {"train": train, "eval": evaluate, "push": push, "releases": releases}[args.command](args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
