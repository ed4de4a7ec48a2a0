"""atlas.json as a typed record: what an atlas folder holds and how it was made.

Every reader of an atlas's record reads an `AtlasInfo` (layout.read_info parses the file
through `info_from_json`); `info_json` is what the one writer, writing.write_atlas, writes.
Keys come in one order, the fields'; optional groups are written only when they apply (a
trained set's training facts, a control's model, a pretrained set's source), so a trained
atlas's file is the same bytes as before the record was typed.

Format versions: every atlas written so far is version 1 and carries no `version` key; a
later format writes its number, and a reader that does not know it refuses the folder with
a message (`UnknownVersion`) instead of misreading it. Keys this version does not know are
kept in `extra` and written back, so a round trip loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from ..activations import OUTLIER_FACTOR
from ..atomic import CorruptFile

FORMAT_VERSION = 1
"""The newest atlas.json format this code reads and writes."""

TRAINING = ("lm_tokens", "train_seconds", "train_tok_s", "torch_threads", "bf16_used",
            "device", "ranks", "parallel")
"""Facts of a build that trained its SAEs here: written together (`parallel` may be null)."""
CONTROL = ("control", "control_seed", "control_of")
"""A control build's model (model_controls.control_info): written when it is one."""


class UnknownVersion(ValueError):
    """An atlas.json of a newer format than this code reads."""


@dataclass(frozen=True)
class AtlasInfo:
    """atlas.json. The dicts are the file's and are not to be changed in place
    (`dataclasses.replace` makes a changed copy)."""

    model: str
    """The LM the SAEs run on (a control atlas: `<real>+<control>`, see control_of)."""
    corpus: str = "default"
    seq_len: int = 256
    train_cfg: dict = field(default_factory=dict)
    """TrainConfig as a dict for a trained set; a pretrained set holds only `outlier_factor`."""
    hookpoints: tuple[str, ...] = ()
    train_windows: int | None = None
    """Windows the corpus cut into less the held-out ones (None: older atlases)."""
    heldout_windows: int = 0
    heldout_ids: tuple[int, ...] | None = None
    """The held-out windows' ids (None: older atlases, whose ids are the seeded draw)."""
    lm_tokens: int | None = None
    train_seconds: float | None = None
    train_tok_s: float | None = None
    torch_threads: int | None = None
    bf16_used: bool | None = None
    device: str | None = None
    ranks: int | None = None
    parallel: str | None = None
    sae_files: dict[str, str] = field(default_factory=dict)
    """{"layers.N/cfg.json": sha256, ...} of the SAE files as written (fingerprint.py)."""
    sae_fingerprint: str = ""
    control: str = "none"
    control_seed: int = 0
    control_of: str | None = None
    total_seconds: float | None = None
    source: dict | None = None
    """A pretrained set's origin (hub/pretrained_atlas.py): repo, release, revision, paths."""
    warnings: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys this version does not know, kept as read."""
    version: int = FORMAT_VERSION

    @property
    def trained_here(self) -> bool:
        return self.lm_tokens is not None

    @property
    def seed(self) -> int:
        return int(self.train_cfg.get("seed", 0))

    @property
    def outlier_factor(self) -> float:
        """The token filter every reader applies (activations.py), as the build used it."""
        return float(self.train_cfg.get("outlier_factor", OUTLIER_FACTOR))

    @property
    def real_model(self) -> str:
        """The real model behind a control atlas; the model itself otherwise."""
        return self.control_of or self.model

    def recipe(self) -> tuple:
        """What two atlases share when they differ only in the model's control and the
        SAEs' seed: the real model, the corpus and its windows, the settings but the seed."""
        cfg = {k: v for k, v in self.train_cfg.items() if k != "seed"}
        return (self.real_model, self.corpus, self.seq_len, self.heldout_ids,
                sorted(cfg.items(), key=str))


_NAMES = tuple(f.name for f in fields(AtlasInfo) if f.name not in ("extra", "version"))
_TUPLES = ("hookpoints", "heldout_ids", "warnings")
_ALWAYS = ("model", "corpus", "seq_len", "train_cfg", "hookpoints", "heldout_windows")


def _written(info: AtlasInfo, name: str) -> bool:
    if name in TRAINING:
        return info.trained_here
    if name in CONTROL:
        return info.control != "none"
    if name == "warnings":
        return info.source is not None
    return name in _ALWAYS or getattr(info, name) not in (None, "", {})


def info_from_json(raw: object, where: str = "atlas.json") -> AtlasInfo:
    """The record of a parsed atlas.json; CorruptFile when it is not one, UnknownVersion
    when it is of a newer format."""
    if not isinstance(raw, dict) or not isinstance(raw.get("hookpoints"), list):
        raise CorruptFile(f"{where} is not an atlas record (no list of hookpoints)")
    version = raw.get("version", 1)
    if version != FORMAT_VERSION:
        raise UnknownVersion(f"{where} is atlas format {version!r}; this SAE Atlas reads "
                             f"format {FORMAT_VERSION}: update it, or build the atlas again")
    known = {k: (tuple(v) if k in _TUPLES and v is not None else v)
             for k, v in raw.items() if k in _NAMES}
    if known.get("parallel") is not None and not isinstance(known["parallel"], str):
        raise CorruptFile(f"{where}: `parallel` is {known['parallel']!r}")
    extra = {k: v for k, v in raw.items() if k not in _NAMES and k != "version"}
    try:
        return AtlasInfo(**known, extra=extra)
    except TypeError as err:  # a required key missing
        raise CorruptFile(f"{where} is not an atlas record: {err}") from err


def info_json(info: AtlasInfo) -> dict:
    """The record as atlas.json holds it, keys in the fields' order (module doc)."""
    out: dict[str, Any] = {} if info.version == 1 else {"version": info.version}
    for name in _NAMES:
        if _written(info, name):
            value = getattr(info, name)
            out[name] = list(value) if name in _TUPLES and value is not None else value
    return out | info.extra

