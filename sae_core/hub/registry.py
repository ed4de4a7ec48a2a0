"""The known pretrained SAE releases on the Hub: SAELens's whole release table, as data.

SAELens release names are not repo ids: the repo and the folder of each SAE come from
SAELens's `pretrained_saes.yaml` (6.54.12), turned into `assets/sae_releases.json` by
`scripts/release_table.py`, plus EleutherAI's sparsify repo for SmolLM2. This module only
reads that table; whether the app can load a release is `releases.verdict` (it depends on
the converters that exist at run time).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .fetch import HubError

TABLE_FILE = Path(__file__).resolve().parents[2] / "assets" / "sae_releases.json"
MODEL_ALIASES = {
    "gpt2-small": "gpt2",
    "pythia-70m-deduped": "EleutherAI/pythia-70m-deduped",
    "pythia-70m": "EleutherAI/pythia-70m",
    "gemma-2b": "google/gemma-2b", "gemma-2b-it": "google/gemma-2b-it",
    "gemma-2-2b": "google/gemma-2-2b", "gemma-2-2b-it": "google/gemma-2-2b-it",
    "gemma-2-9b": "google/gemma-2-9b", "gemma-2-9b-it": "google/gemma-2-9b-it",
    "gemma-2-27b": "google/gemma-2-27b",
    "mistral-7b": "mistralai/Mistral-7B-v0.1",
    **{f"qwen3-{s.lower()}": f"Qwen/Qwen3-{s}" for s in ("0.6B", "1.7B", "4B", "8B", "14B")},
}
"""TransformerLens model names (used in SAELens configs and its table) -> Hugging Face ids."""


@dataclass(frozen=True)
class SaeEntry:
    """One SAE of a release, as the table lists it."""

    id: str
    """What the user picks (SAELens's SAE id; a hookpoint for sparsify repos)."""
    path: str
    """Its folder (or file) in the repo."""
    hook: str
    """What it reads: a TransformerLens hook name, as SAELens's loader for the layout names
    it (a module name for sparsify repos)."""
    hook_out: str = ""
    """What a transcoder predicts ("" for an SAE)."""
    neuronpedia: str = ""
    """Its Neuronpedia id, `<model>/<layer>-<set>` ("" when it has none)."""
    norm_scale: float | None = None
    """The dataset-norm scale SAELens folds into the weights (`norm_scaling_factor`)."""
    l0: float | None = None
    """Average active latents per token, as the table states it."""

    @property
    def layer(self) -> int | None:
        """The block the hook belongs to (None for the embeddings)."""
        m = re.match(r"^(?:blocks|layers)\.(\d+)\.", self.hook + ".")
        return int(m.group(1)) if m else None


@dataclass(frozen=True)
class Release:
    name: str
    """What the user picks: a SAELens release name, or the repo id for sparsify repos."""
    repo_id: str
    """The Hugging Face repo holding the SAEs."""
    model: str
    """Hugging Face id of the model the SAEs were trained on."""
    format: str
    """The layout of its files: SAELens's `conversion_func` ("saelens" when none,
    "sparsify"); a key of `formats.CONVERTERS` when the app reads it."""
    saes: tuple[SaeEntry, ...]
    note: str = ""
    """What a user must know before trusting the features on raw HF activations."""
    run_on: str = ""
    """The model to load them on by default when it differs from `model` (offline here)."""
    config_overrides: dict = field(default_factory=dict, hash=False, compare=False)
    """SAELens's per-release config overrides (e.g. `normalize_activations`)."""

    @property
    def sae_ids(self) -> list[str]:
        return [s.id for s in self.saes]

    @cached_property
    def _by_id(self) -> dict[str, SaeEntry]:
        return {s.id: s for s in self.saes}

    def sae(self, sae_id: str) -> SaeEntry:
        if sae_id not in self._by_id:
            shown = ", ".join(self.sae_ids[:40]) + (", ..." if len(self.saes) > 40 else "")
            raise HubError(f"release {self.name!r} has no SAE {sae_id!r}; it has {shown}")
        return self._by_id[sae_id]

    def path_of(self, sae_id: str) -> str:
        return self.sae(sae_id).path

    @property
    def norm_scales(self) -> dict[str, float]:
        """SAE id -> the dataset-norm scale the table gives it (only those that have one)."""
        return {s.id: s.norm_scale for s in self.saes if s.norm_scale is not None}


COLUMNS = ("id", "path", "hook", "hook_out", "neuronpedia", "norm_scale", "l0")
"""The table's row of one SAE (trailing empty ones left out; a "path" of "" is the release's
`path_prefix` + the id): the fields of `SaeEntry`, in order."""


def release_of(name: str, raw: dict) -> Release:
    """One release from its JSON entry (scripts/release_table.py writes them)."""
    prefix, saes = raw.get("path_prefix", ""), []
    for row in raw["saes"]:
        sae_id, path, hook, hook_out, np_id, scale, l0 = [*row, *[None] * 7][:7]
        saes.append(SaeEntry(sae_id, path or prefix + sae_id, hook, hook_out or "",
                             np_id or "", scale, l0))
    return Release(name, raw["repo_id"], raw["model"], raw["layout"], tuple(saes),
                   raw.get("note", ""), raw.get("run_on", ""), raw.get("config_overrides", {}))


def read_table(path: Path | str = TABLE_FILE) -> dict[str, Release]:
    """Release name -> Release, in the table's order."""
    raw = json.loads(Path(path).read_text())
    if tuple(raw.get("columns", COLUMNS)) != COLUMNS:
        raise ValueError(f"{path}: rows of {raw['columns']}, expected {COLUMNS}")
    return {name: release_of(name, entry) for name, entry in raw["releases"].items()}


RELEASES: dict[str, Release] = read_table()


def canonical_model(name: str) -> str:
    """A model name compared across conventions: alias resolved, org dropped, lower case."""
    return MODEL_ALIASES.get(name, name).rsplit("/", 1)[-1].lower()


def same_model(a: str, b: str) -> bool:
    return bool(a and b) and canonical_model(a) == canonical_model(b)


def release_label(release: Release) -> str:
    return f"{release.name} ({release.model}, {len(release.saes)} SAEs)"


def slug(text: str) -> str:
    """A folder-safe name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text.replace("/", "--")).strip("-.") or "sae"
