"""What strangers may do when the app serves the public (a Hugging Face Space): the policy
in one place.

In public mode every visitor is a stranger: nothing they send may use the server's Hugging
Face token, reach the server's files or load a model of their choice. So Hub SAEs load only
from the registry's releases, models only from a fixed list, and every Hub call sends no
token. The checks run inside the functions the endpoints call, because a stranger can call
an endpoint directly, whatever the page shows.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from sae_core.hub.load import parse_ids
from sae_core.hub.registry import RELEASES
from sae_core.hub.releases import loadable_ids
from sae_core.lm import EMBEDDED_ID

MAX_PUBLIC_SAES = 12
"""SAEs one public load may fetch: each is held in memory, evaluated and written to disk
(EleutherAI's SmolLM2 SAEs are ~170 MB each; all 30 would not fit a free Space)."""


PUBLIC_RELEASES = ("EleutherAI/sae-SmolLM2-135M-64x", "gpt2-small-res-jb",
                   "pythia-70m-deduped-res-sm", "pythia-70m-deduped-mlp-sm")
"""The releases public mode offers: the whole table names models up to 70B parameters, and
a free Space (2 CPU cores, 16 GB) runs only small ones."""


class PolicyError(ValueError):
    """A request the public mode refuses; the message says what is allowed instead."""


def registry_models() -> tuple[str, ...]:
    """The embedded model, then every model a public release names (trained for or run on)."""
    names = [EMBEDDED_ID]
    for release in map(RELEASES.__getitem__, PUBLIC_RELEASES):
        names += [release.model, *([release.run_on] if release.run_on else [])]
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class Policy:
    """What visitors may load."""

    public: bool
    """Serving strangers: Hub loads only from `PUBLIC_RELEASES`, no token, no free-text ids."""
    allowed_models: tuple[str, ...] = ()
    """Hub ids of the models visitors may run SAEs on (public mode only)."""

    @classmethod
    def for_mode(cls, public: bool) -> Policy:
        """The policy of a mode: public mode allows the embedded and the registry's models."""
        return cls(public=public, allowed_models=registry_models() if public else ())


def check_model(policy: Policy, model_id: str) -> str:
    """The model id, stripped; in public mode a PolicyError unless it is an allowed Hub id
    that is not also a local path here (from_pretrained would read the folder)."""
    model_id = (model_id or "").strip()
    if not policy.public:
        return model_id
    if model_id not in policy.allowed_models:
        raise PolicyError(f"this public demo runs SAEs only on {', '.join(policy.allowed_models)}"
                          f"; {model_id!r} is not one of them")
    if Path(model_id).exists():
        raise PolicyError(f"{model_id!r} names a local path on this server: refused")
    return model_id


def offered(policy: Policy) -> tuple[str, ...]:
    """The releases this mode lets visitors pick."""
    return PUBLIC_RELEASES if policy.public else tuple(RELEASES)


def check_source(policy: Policy, source: str) -> str:
    """The SAE source, stripped; in public mode a PolicyError unless it names a public
    release (no free-text repo ids, no paths)."""
    source = (source or "").strip()
    if policy.public and source not in PUBLIC_RELEASES:
        known = ", ".join(PUBLIC_RELEASES)
        raise PolicyError(f"this public demo loads only the known releases ({known}); "
                          f"{source or 'nothing'!r} is not one of them")
    return source


def check_sae_ids(policy: Policy, source: str, sae_ids: str) -> str:
    """The SAE ids as given; in public mode a PolicyError unless they are SAEs of the
    release `source` ("all": those the app loads, or a list), at most MAX_PUBLIC_SAES."""
    if not policy.public:
        return sae_ids
    release = RELEASES[check_source(policy, source)]
    ids = parse_ids(sae_ids, release)
    # a HubError naming the release's SAEs when one is unknown, or why it cannot load
    ids = loadable_ids(release, ids, every=(sae_ids or "").strip() == "all")
    if len(ids) > MAX_PUBLIC_SAES:
        raise PolicyError(f"this public demo loads at most {MAX_PUBLIC_SAES} SAEs at once; "
                          f"{len(ids)} of {release.name} were asked for: name fewer")
    return sae_ids.strip()


def hub_token(policy: Policy) -> bool | None:
    """The `token` to pass to huggingface_hub: False (send none, never the server's) in
    public mode, None (huggingface_hub's default: the configured token) otherwise."""
    return False if policy.public else None


_lock = threading.Lock()
_current = Policy.for_mode(False)


def set_policy(new: Policy) -> Policy:
    """Make `new` the app's policy (once, at start, before building the app); returns the
    previous one."""
    global _current
    with _lock:
        old, _current = _current, new
    return old


def policy() -> Policy:
    """The app's policy; not public until `set_policy` says otherwise."""
    return _current
