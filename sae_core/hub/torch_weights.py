"""Torch pickles (`.pt`, `.pth`), read only where a suite ships nothing else (Qwen Scope,
Goodfire, dictionary_learning, qresearch): `torch.load(weights_only=True)` on the CPU,
which refuses every object but tensors, containers and plain values, and then a check that
what came out is a flat dict of tensors. Never the plain unpickler.

Public mode (a Space serving strangers) loads pickled layouts only for releases on
`PICKLE_ALLOW_LIST`: `weights_only` narrows what a file can do, but the safest pickled
file is one never opened.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from .fetch import HubError

PICKLE_LAYOUTS = ("dictionary_learning_1", "qwen_scope", "goodfire", "deepseek_r1")
"""Layouts whose weights are torch pickles."""
PICKLE_ALLOW_LIST = frozenset({
    # Qwen's own releases for the small Qwen 3 models (files from the Qwen organisation).
    "qwen-scope-3-1.7b-base-w32k-l50", "qwen-scope-3-1.7b-base-w32k-l100",
    "qwen-scope-3.5-2b-base-w32k-l50", "qwen-scope-3.5-2b-base-w32k-l100",
})
"""Releases whose pickles public mode may open."""
MAX_TENSORS = 64
"""More entries than any suite's checkpoint holds: a file with more is not an SAE."""


PICKLE_SUFFIXES = (".pt", ".pth")


def is_pickle(layout: str, weights_file: str = "") -> bool:
    """Whether an SAE of this layout (or this weights file, when the layout is not yet
    known) is pickled by torch."""
    return layout in PICKLE_LAYOUTS or weights_file.endswith(PICKLE_SUFFIXES)


def check_pickle_policy(layout: str, release: str | None, public: bool,
                        weights_file: str = "") -> None:
    """HubError when public mode would open pickled weights of a release not on the
    allow-list."""
    if public and is_pickle(layout, weights_file) and release not in PICKLE_ALLOW_LIST:
        allowed = ", ".join(sorted(PICKLE_ALLOW_LIST))
        raise HubError(f"{release or 'this repository'} stores its weights as torch pickles "
                       f"({layout or weights_file}); this public demo opens pickles only for "
                       f"{allowed}")


def read_torch(path: Path, what: str) -> dict[str, Tensor]:
    """A flat dict of tensors from a `.pt`/`.pth` file, through `weights_only=True`."""
    try:
        raw = torch.load(path, weights_only=True, map_location="cpu", mmap=False)
    except Exception as err:  # the unpickler raises many types; each means refused
        raise HubError(f"{what}: not a plain file of tensors (torch.load with weights_only "
                       f"refused it: {type(err).__name__}: {str(err)[:300]})") from err
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]  # some trainers nest the weights once
    if not isinstance(raw, dict) or len(raw) > MAX_TENSORS:
        raise HubError(f"{what}: expected a dict of at most {MAX_TENSORS} tensors, got "
                       f"{type(raw).__name__}")
    bad = sorted(str(k) for k, v in raw.items() if not isinstance(k, str)
                 or not isinstance(v, Tensor | int | float) or isinstance(v, bool))
    if bad:
        raise HubError(f"{what}: entries {bad[:5]} are not named tensors or numbers")
    # Plain numbers (a `k`) become 0-d tensors, so converters see one kind of value.
    return {k: v if isinstance(v, Tensor) else torch.tensor(v, device="cpu")
            for k, v in raw.items()}
