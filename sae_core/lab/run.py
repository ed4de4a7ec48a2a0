"""One lab experiment from its config to its folder: the rows (a model layer's activations or
the synthetic benchmark), the SAEs trained on them (a sweep or a recipe comparison), and
results.json (settings and every number) and table.md."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from ..activations import SITES, hookpoint_name
from ..atomic import write_json, write_text
from ..config import TrainConfig
from ..lm import EMBEDDED, LM, load_lm
from ..progress import Report
from .data import LabData, layer_data, synthetic_data
from .experiments import RECIPES, SWEEPABLE, compare, sweep
from .synthetic import SyntheticConfig, synthetic_recipe
from .table import table_markdown

LAB_ROOT = Path("checkpoints/lab")
DEFAULT_VALUES = {"k": (8, 16, 32, 64, 128), "l1_coeff": (0.02, 0.05, 0.1, 0.2, 0.5),
                  "expansion": (2, 4, 8, 16)}
SYNTHETIC_K = (1, 2, 4, 8, 16)
"""k to sweep on the synthetic rows (about 5 features are active per row there)."""


@dataclass(frozen=True)
class LabConfig:
    """What one lab experiment trains on and changes (`python -m sae_core lab ...`)."""

    data: Literal["layer", "synthetic"] = "layer"
    """layer: one hookpoint of the model over the corpus; synthetic: the synthetic benchmark
    (known features; adds MMCS and recovery)."""
    model: str = EMBEDDED
    """The model of a layer experiment: embedded, a Hub id or a folder."""
    layer: int = 12
    """The layer of a layer experiment."""
    site: Literal["resid", "mlp", "attn"] = "resid"
    """Where on the layer: the residual stream, the MLP output or the attention output."""
    corpus: str = "default"
    """The text of a layer experiment: 'default', a .txt/.jsonl file or a Hub dataset id."""
    seq_len: int = 256
    """Tokens per corpus window."""
    tokens: int | None = None
    """Training rows every SAE of the experiment sees once, in the same order (held out: 16
    windows of a layer, or an eighth as many samples); None: 131,072 tokens of a layer,
    2,000,000 synthetic samples (as bench/synthetic.py)."""
    param: Literal["k", "l1_coeff", "expansion"] = "k"
    """What a sweep changes."""
    values: tuple[float, ...] | None = None
    """The sweep's values; None: k 8..128, l1_coeff 0.02..0.5, expansion 2..16."""
    recipes: tuple[str, ...] | None = None
    """The recipes a comparison trains (names as in the table); None: all of them."""

    def __post_init__(self) -> None:
        if self.site not in SITES:
            raise ValueError(f"site must be one of {', '.join(SITES)}, got {self.site!r}")
        if self.tokens is not None and not 1_024 <= self.tokens <= 10_000_000:
            raise ValueError(f"tokens must be 1,024 to 10,000,000, got {self.tokens}")
        if self.param not in SWEEPABLE:
            raise ValueError(f"param must be one of {', '.join(SWEEPABLE)}")
        unknown = set(self.recipes or ()) - set(RECIPES)
        if unknown:
            raise ValueError(f"unknown recipes {sorted(unknown)}; choose from {', '.join(RECIPES)}")

    def rows(self) -> int:
        return self.tokens or (2_000_000 if self.data == "synthetic" else 131_072)

    def sweep_values(self) -> tuple:
        if self.values:
            return self.values
        return SYNTHETIC_K if (self.data, self.param) == ("synthetic", "k") else \
            DEFAULT_VALUES[self.param]


def lab_data(lab: LabConfig, base: TrainConfig,
             lm: LM | None) -> tuple[LabData, TrainConfig]:
    """The experiment's rows, and the base recipe for them (on synthetic rows, k keeps its
    share of active latents at the synthetic width)."""
    if lab.data == "synthetic":
        syn = SyntheticConfig()
        return (synthetic_data(syn, lab.rows(), max(lab.rows() // 8, 4_096)),
                synthetic_recipe(syn, base))
    return layer_data(lm, hookpoint_name(lab.layer, lab.site), tokens=lab.rows(),
                      corpus=lab.corpus, seq_len=lab.seq_len), base


def run_lab(kind: Literal["sweep", "compare"], lab: LabConfig, base: TrainConfig, *,
            out: Path | None = None, lm: LM | None = None,
            report: Report | None = None) -> Path:
    """Run a sweep or a comparison and write its folder (default checkpoints/lab/<name>):
    results.json and table.md; ui/saes/lab_figures.py draws its figure."""
    t0 = time.perf_counter()
    if lab.data == "layer" and lm is None:
        lm = load_lm(lab.model)
    data, base = lab_data(lab, base, lm)
    scorer = lm if lab.data == "layer" else None
    if kind == "sweep":
        rows = sweep(data, base, lab.param, list(lab.sweep_values()), lm=scorer, report=report)
        title = f"Sweep of {lab.param} ({base.architecture}) on {data.name}"
    else:
        rows = compare(data, base, tuple(lab.recipes or RECIPES), lm=scorer, report=report)
        title = f"SAE recipes on {data.name}, {len(data.train_ND):,} training rows each"
    name = f"{kind}-{lab.param}" if kind == "sweep" else kind
    out = Path(out or LAB_ROOT / f"{name}-{data.name.replace(' ', '-').replace('/', '-')}")
    write_json(out / "results.json", {
        "kind": kind, "title": title, "lab": asdict(lab), "base": asdict(base),
        "model": lm.name if lab.data == "layer" else None, "hookpoint": data.hookpoint,
        "data": data.name, "train_rows": len(data.train_ND), "test_rows": len(data.test_ND),
        "seconds": time.perf_counter() - t0, "rows": rows})
    write_text(out / "table.md", f"{title}\n\n{table_markdown(rows)}")
    return out
