"""The parts of an atlas build, in order; each is skipped when it is already on disk, so a
build interrupted anywhere resumes where it stopped (training itself resumes from its
last checkpoint).

A quick atlas (`quick_job`) is the first of the app's two rounds when it has no atlas: every
third layer, SAEs trained on QUICK_TOKENS tokens, a small feature index, the layer map
without intervals (no probing, names or lineage), CE loss on QUICK_CE_WINDOWS windows and
no presets, served while the full atlas builds after it. It lives next to the default atlas
in a folder named QUICK_NAME, which is how its parts are known to be whole."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from ..atlas.build import build_atlas
from ..atlas.layout import is_built, open_with
from ..config import BuildConfig, TrainConfig
from ..explore.evidence import ensure_layer_evidence, has_layer_evidence
from ..explore.feature_index import ensure_feature_index, has_feature_index
from ..explore.layermap import read_layer_map
from ..explore.one_pass import after_training_for
from ..lm import LM
from ..progress import Report
from ..steer.presets import ensure_presets, read_presets


@dataclass(frozen=True)
class BuildJob:
    """An atlas to build in `folder`, and which of its parts."""

    folder: Path
    data: BuildConfig = field(default_factory=BuildConfig)
    cfg: TrainConfig = field(default_factory=TrainConfig)
    parts: tuple[str, ...] = ("SAEs", "layer map", "feature index", "presets")
    """Parts to build (a subset of STAGES' names, always in STAGES' order)."""
    quick: bool = False
    """A quick atlas's SAEs stage (`quick_job`): the small index and the bare layer map."""

    def __post_init__(self) -> None:
        unknown = set(self.parts) - {s.name for s in STAGES}
        if unknown or "SAEs" not in self.parts:
            raise ValueError(f"parts must include 'SAEs' and come from "
                             f"{[s.name for s in STAGES]}, got {list(self.parts)}")


class Stage(NamedTuple):
    name: str
    done: Callable[[Path], bool]
    run: Callable[[BuildJob, LM, Report], object]


STAGES = (
    Stage("SAEs", is_built,
          lambda job, lm, report: build_atlas(job.folder, data=job.data, cfg=job.cfg,
                                              report=report, lm=lm,
                                              after=after_training_for(job.parts, job.quick))),
    # The SAEs stage writes the next two from its one pass after training
    # (explore/one_pass.py); these rebuild them alone when missing, stale or damaged.
    # The layer map with the rest of the layer evidence (probing, names, lineage): one pass.
    Stage("layer map", lambda f: (read_layer_map(f) is not None if is_quick(f)
                                  else has_layer_evidence(f)),
          lambda job, lm, report: ensure_layer_evidence(job.folder, lm=lm, report=report)),
    Stage("feature index", has_feature_index,
          lambda job, lm, report: ensure_feature_index(job.folder, lm=lm, report=report)),
    Stage("presets", lambda f: read_presets(f) is not None,
          lambda job, lm, report: ensure_presets(job.folder, open_with(job.folder, lm),
                                                 report=report)),
)


QUICK_NAME = "quick"
QUICK_EVERY, QUICK_TOKENS, QUICK_CE_WINDOWS = 3, 32_768, 4


def is_quick(folder: Path | str) -> bool:
    return Path(folder).name == QUICK_NAME


def quick_job(default: Path, n_layers: int) -> BuildJob:
    """The quick atlas next to `default` for a model of `n_layers` layers (module doc)."""
    return BuildJob(Path(default).parent / QUICK_NAME,
                    data=BuildConfig(layers=tuple(range(0, n_layers, QUICK_EVERY)),
                                     ce_windows=QUICK_CE_WINDOWS),
                    cfg=TrainConfig(max_tokens=QUICK_TOKENS),
                    parts=("SAEs", "layer map", "feature index"), quick=True)


def stages_of(job: BuildJob) -> list[Stage]:
    return [s for s in STAGES if s.name in job.parts]


def complete_atlas(folder: Path, lm: LM, report: Report | None = None) -> list[str]:
    """Build the parts a finished atlas lacks (layer map, feature index, presets), in order;
    returns their names."""
    missing = [s for s in STAGES[1:] if not s.done(Path(folder))]
    for stage in missing:
        stage.run(BuildJob(Path(folder)), lm, report)
    return [s.name for s in missing]


def ready_parts(folder: Path) -> tuple[str, ...]:
    """The parts of the atlas in `folder` already on disk (in build order)."""
    folder = Path(folder)
    if not is_built(folder):
        return ()
    return tuple(s.name for s in STAGES if s.done(folder))
