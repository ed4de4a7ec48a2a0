"""What the app serves: models and atlases, each loaded lazily and once, shared by all visitors.

Both caches are bounded, least recently used out (fewer in public mode, where memory is a
free Space's 16 GB); a model leaving takes the atlases that run on it along, so an evicted
model is never held twice. Models registered by callers (tests, scripts holding a model)
are never evicted. Each key loads once at a time; other keys and cache hits do not wait.
The judge of steered text (`judge_model`) is one more model, loaded on first use and kept.

Forward passes from many visitors may run at once: hooks act only in their own thread
(sae_core/hooks.py), so sharing one model is safe.

Models load onto one device for the whole app (`set_device`: app.py's `--device`, or
SAE_ATLAS_DEVICE; the CPU by default); an atlas's SAEs follow its model there (open_with).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import torch

from sae_core.atlas.layout import (
    ATLAS_ROOT,
    LoadedAtlas,
    current_fingerprint,
    forget_reads,
    open_with,
    read_info,
)
from sae_core.lm import LM, load_named
from sae_core.precision import resolve_device
from sae_core.steer.judge import load_judge

from . import public

MODEL_LIMIT = {True: 2, False: 4}
"""Models kept at once, by public mode (SmolLM2-135M: ~0.5 GB in fp32; gpt2: ~0.5 GB)."""
ATLAS_LIMIT = {True: 4, False: 8}
"""Atlases kept at once, by public mode (the default atlas's SAEs: ~0.6 GB)."""
K = TypeVar("K")
V = TypeVar("V")

_lock = threading.Lock()
_pinned: dict[str, LM] = {}
_models: OrderedDict[str, LM] = OrderedDict()
_atlases: OrderedDict[Path, LoadedAtlas] = OrderedDict()
_gates: dict[object, threading.Lock] = {}
_served: set[Path] = set()
_judges: OrderedDict[str, LM] = OrderedDict()
DEVICE_ENV = "SAE_ATLAS_DEVICE"
_device = torch.device("cpu")


def choose_device(flag: str | None, environ: Mapping[str, str]) -> str:
    """The `--device` value, else SAE_ATLAS_DEVICE, else cpu."""
    return flag or environ.get(DEVICE_ENV, "").strip() or "cpu"


def set_device(name: str | torch.device) -> torch.device:
    """Where models load from now on (precision.DEVICES; ValueError for one that is not
    here). Call it before serving: models loaded already stay where they are."""
    global _device
    _device = resolve_device(name)
    return _device


def device() -> torch.device:
    return _device


def _cached(cache: OrderedDict[K, V], key: K) -> V | None:
    """The cached value, marked as just used; None when absent. Call under `_lock`."""
    if key not in cache:
        return None
    cache.move_to_end(key)
    return cache[key]


def _get(cache: OrderedDict[K, V], key: K, load: Callable[[], V], limit: int) -> V:
    """`cache[key]`, loaded by `load()` outside the lock (once at a time per key), with the
    least recently used entries over `limit` dropped."""
    with _lock:
        if (hit := _cached(cache, key)) is not None:
            return hit
        gate = _gates.setdefault((id(cache), key), threading.Lock())
    with gate:
        try:
            with _lock:
                if (hit := _cached(cache, key)) is not None:
                    return hit
            value = load()
            with _lock:
                cache[key] = value
                while len(cache) > limit:
                    _, old = cache.popitem(last=False)
                    if isinstance(old, LM):
                        _drop_atlases_of(old)
            return value
        finally:
            with _lock:
                _gates.pop((id(cache), key), None)


def _drop_atlases_of(lm: LM) -> None:
    """Forget the atlases running on an evicted model. Call under `_lock`."""
    for key in [k for k, a in _atlases.items() if a.lm is lm]:
        del _atlases[key]


def model(name: str) -> LM:
    """The LM called `name` (an atlas's `model` field), loaded once. In public mode only
    the policy's models load, and without the server's Hub token."""
    with _lock:
        if name in _pinned:
            return _pinned[name]
    policy = public.policy()

    def load() -> LM:
        return load_named(public.check_model(policy, name), token=public.hub_token(policy),
                          device=_device)

    return _get(_models, name, load, MODEL_LIMIT[policy.public])


def judge_model() -> LM:
    """The judge of steered text (sae_core/steer/judge.py: Gemma 3 270M, a second small LM,
    ~10-20 s to load the first time), loaded once and kept: one for the whole app, on the
    CPU whatever `set_device` chose (the judge's inputs are built there)."""
    return _get(_judges, "judge", load_judge, 1)


def register_model(lm: LM) -> None:
    """Serve an already loaded LM under its name, never evicted (tests, and callers holding
    a model)."""
    with _lock:
        _pinned[lm.name] = lm
        _models.pop(lm.name, None)


def serve_folder(folder: Path | str) -> None:
    """Let visitors open an atlas outside checkpoints/atlas (a Hub atlas in the HF cache)."""
    with _lock:
        _served.add(Path(folder).resolve())


def check_folder(folder: Path | str) -> Path:
    """The resolved folder of an SAE set a visitor may open. In public mode only folders
    under checkpoints/atlas or served ones: a stranger's request names no other path on the
    server. ValueError otherwise."""
    key = Path(folder).resolve()
    if public.policy().public and not (key.is_relative_to(ATLAS_ROOT.resolve())
                                       or key in _served):
        raise ValueError(f"unknown SAE set {Path(folder).name!r}")
    return key


def open_atlas(folder: Path | str) -> LoadedAtlas:
    """A finished atlas with its SAEs and model, loaded once per version of its SAEs (until
    evicted or forgotten): one whose SAE files changed on disk (a rebuild) is read again.
    `check_folder` says which folders a visitor may open."""
    key = check_folder(folder)
    now = current_fingerprint(key)  # cheap: file stats, digests cached per file version
    with _lock:
        stale = key in _atlases and _atlases[key].fingerprint != now
    if stale:
        forget(key)

    def load() -> LoadedAtlas:
        return open_with(folder, model(read_info(folder).model))

    return _get(_atlases, key, load, ATLAS_LIMIT[public.policy().public])


def forget(folder: Path | str) -> None:
    """Drop the atlas of `folder` (rebuilt or removed): the next `open_atlas` reads it again."""
    with _lock:
        _atlases.pop(Path(folder).resolve(), None)
    forget_reads(folder)
