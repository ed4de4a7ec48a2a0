"""Which atlas the app serves at start, and what it builds in the background.

Serve first, build after: the first page answers within seconds whatever is on disk.
`SAE_ATLAS_REPO=USER/REPO[@revision]` takes a prebuilt atlas from the Hub cache (a Space
preloads it with `preload_from_hub`); when that is unusable the reason is printed and the
default atlas is built in the background instead, as it is when no repo is set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from sae_core.atlas.layout import DEFAULT_ATLAS, is_built
from sae_core.hub.atlas_repo import AtlasCheckError, open_hub_atlas
from sae_core.hub.export import ATLAS_REPO_ENV as REPO_VAR
from sae_core.hub.fetch import HubError
from sae_core.jobs.stages import STAGES, BuildJob, quick_job, ready_parts
from sae_core.lm import EMBEDDED_ID

from . import builds, session


class Start(NamedTuple):
    atlas: Path
    """The atlas the picker opens on (maybe still being built)."""
    notes: tuple[str, ...]
    """What the owner should know: where the atlas came from, why a Hub atlas was not used."""


def hub_atlas(spec: str, *, token: bool | None) -> Path:
    """The checked Hub atlas for the embedded model; HubError / AtlasCheckError say why not."""
    lm = session.model(EMBEDDED_ID)
    return open_hub_atlas(spec, model=lm.name, d_model=lm.d_model, token=token)


def choose_atlas(environ: Mapping[str, str] = os.environ, *, build: bool = True,
                 token: bool | None = None, default: Path = DEFAULT_ATLAS) -> Start:
    """The atlas to serve; starts the background build of whatever `default` lacks."""
    notes: list[str] = []
    spec = environ.get(REPO_VAR, "").strip()
    if spec:
        try:
            folder = hub_atlas(spec, token=token)
            session.serve_folder(folder)
            return Start(folder, (f"serving the prebuilt atlas {spec} from {folder}",))
        except (HubError, AtlasCheckError, ValueError) as err:
            notes.append(f"{REPO_VAR}={spec} is not used: {err}. Building the default atlas "
                         "in the background instead.")
    missing = [s.name for s in STAGES if s.name not in ready_parts(default)]
    if build and missing and not is_built(default):
        # two rounds: a quick atlas served within minutes, then the full one
        quick = quick_job(default, session.model(EMBEDDED_ID).n_layers)
        quick_ready = ready_parts(quick.folder) == quick.parts
        builds.start(BuildJob(default) if quick_ready else quick,
                     None if quick_ready else BuildJob(default))
        notes.append(f"building {'' if quick_ready else 'a quick atlas, then '}"
                     f"{', '.join(missing)} of {default} in the background; the app serves "
                     "meanwhile")
        return Start(quick.folder if quick_ready else default, tuple(notes))
    if build and missing:
        builds.start(BuildJob(default))
        notes.append(f"building {', '.join(missing)} of {default} in the background; "
                     "the app serves meanwhile")
    return Start(default, tuple(notes))
