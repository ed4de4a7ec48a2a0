"""SAE lab from the command line: sweep one setting, or compare the recipes, on one layer of a
model or on the synthetic benchmark; writes results.json, table.md and the frontier figure
(HTML, and PNG where chromium is installed) under checkpoints/lab/. See docs/sae_lab.md.

    python scripts/lab.py compare --data synthetic
    python scripts/lab.py compare --layer 12
    python scripts/lab.py sweep --param k --values 8,16,32,64,128 --layer 12
    python scripts/lab.py sweep --param l1_coeff --arch relu --data synthetic

The options are LabConfig's (what to train on, what to change) and TrainConfig's (the base
recipe, TopK + AuxK by default); --help lists them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sae_core.cli_options import add_config_args, config_from_args
from sae_core.config import TrainConfig
from sae_core.lab.run import LabConfig, run_lab
from sae_core.progress import console_report
from ui.saes.lab_figures import draw_run


def parser() -> argparse.ArgumentParser:
    lab = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    lab.add_argument("kind", choices=("sweep", "compare"))
    lab.add_argument("--out", type=Path, default=None,
                     help="output folder (default checkpoints/lab/<kind>-<data>)")
    add_config_args(lab, LabConfig)
    add_config_args(lab, TrainConfig, aliases={"architecture": "--arch"})
    return lab


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.data == "synthetic":  # small matrices: a second thread costs more than it gives
        torch.set_num_threads(1)
    try:
        out = run_lab(args.kind, config_from_args(LabConfig, args),
                      config_from_args(TrainConfig, args), out=args.out, report=console_report())
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    drawn = draw_run(out)
    print(f"\n{(out / 'table.md').read_text()}\nwrote {out}: results.json, table.md, "
          + ", ".join(p.name for p in drawn))
    return 0


if __name__ == "__main__":
    sys.exit(main())
