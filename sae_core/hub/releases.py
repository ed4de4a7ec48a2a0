"""Which releases of the table the app can load, and why not the others.

Decided at run time, from the converters that exist then (`formats.CONVERTERS`) and the
hooks `hook_names.hook_of` maps (an SAE's hook, or a transcoder's hook and `hook_out`): the
table (registry.py) only says what each SAE is.
Also the choices the SAEs tab offers (model, release, layer, search) and Neuronpedia links.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from .fetch import HubError
from .formats import CONVERTERS
from .hook_names import hook_of
from .registry import RELEASES, Release, SaeEntry

CLT_LAYOUTS = ("mntss_clt_layer_transcoder",)
NORMALISATIONS = (None, "none", "expected_average_only_in")
"""`normalize_activations` values the converters handle (a constant input scale)."""
NEURONPEDIA = "https://www.neuronpedia.org"
LAYER_NUMBER = re.compile(r"[.]\d+[.]")


def supported_layouts() -> tuple[str, ...]:
    return tuple(CONVERTERS)


def sae_verdict(release: Release, sae: SaeEntry, layouts: Collection[str]) -> str:
    """"" when the app can load this SAE, else why not (a reason shared by similar SAEs, so
    they group: the hook's layer number reads N)."""
    if release.format in CLT_LAYOUTS or sae.path.startswith("clt/") or "/clt/" in sae.path:
        return "cross-layer transcoder: refused (its latents write to every later layer)"
    if release.format not in layouts:
        return f"layout {release.format}: no converter yet"
    norm = release.config_overrides.get("normalize_activations")
    if norm not in NORMALISATIONS:
        return f"normalisation {norm} not supported"
    if not sae.hook:
        return "the table names no hook"
    try:
        hook_of(sae.hook, sae.hook_out)
    except HubError:
        hooks = sae.hook + (f" -> {sae.hook_out}" if sae.hook_out else "")
        return f"hook {LAYER_NUMBER.sub('.N.', hooks + '.')[:-1]} has no hookpoint here"
    return ""


@dataclass(frozen=True)
class ReleaseVerdict:
    name: str
    supported: tuple[str, ...]
    """Its SAE ids the app can load."""
    refused: dict[str, str]
    """Its other SAE ids -> why not."""

    @property
    def ok(self) -> bool:
        """Loadable when at least one of its SAEs is."""
        return bool(self.supported)

    @property
    def reason(self) -> str:
        """Why none of its SAEs loads (the most common reason), "" when some do."""
        return "" if self.ok else Counter(self.refused.values()).most_common(1)[0][0]


def verdict(release: Release, layouts: Collection[str] | None = None) -> ReleaseVerdict:
    layouts = supported_layouts() if layouts is None else layouts
    why = {s.id: sae_verdict(release, s, layouts) for s in release.saes}
    return ReleaseVerdict(release.name, tuple(i for i, r in why.items() if not r),
                          {i: r for i, r in why.items() if r})


def loadable_ids(release: Release, ids: list[str], *, every: bool = False,
                 layouts: Collection[str] | None = None) -> list[str]:
    """`ids` of `release`, checked: HubError for one it lacks or cannot load (with why).
    `every`: all the SAEs of the release the app can load instead ("all")."""
    v = verdict(release, layouts)
    if every:
        if not v.ok:
            raise HubError(f"{release.name} cannot be loaded here: {v.reason}")
        return list(v.supported)
    for sae_id in ids:
        release.sae(sae_id)  # HubError naming its SAEs when unknown
        if sae_id in v.refused:
            raise HubError(f"{release.name}: {sae_id} cannot be loaded here: "
                           f"{v.refused[sae_id]}")
    return ids


@dataclass(frozen=True)
class TableSummary:
    layouts: tuple[str, ...]
    """The layouts the verdicts assumed readable."""
    releases: int
    saes: int
    ok_releases: int
    ok_saes: int
    refused_releases: dict[str, list[str]]
    """Reason -> the releases none of whose SAEs load."""
    refused_saes: Counter
    """Reason -> how many SAE ids (of every release) it refuses."""


def summarise(releases: Iterable[Release], layouts: Collection[str] | None = None
              ) -> TableSummary:
    layouts = supported_layouts() if layouts is None else tuple(layouts)
    verdicts = [verdict(r, layouts) for r in releases]
    by_reason: dict[str, list[str]] = {}
    for v in verdicts:
        if not v.ok:
            by_reason.setdefault(v.reason, []).append(v.name)
    return TableSummary(
        layouts, len(verdicts), sum(len(v.supported) + len(v.refused) for v in verdicts),
        sum(v.ok for v in verdicts), sum(len(v.supported) for v in verdicts), by_reason,
        Counter(r for v in verdicts for r in v.refused.values()))


def summary_lines(s: TableSummary, unsupported: bool = False) -> list[str]:
    """What `python -m sae_core releases` prints."""
    lines = [f"releases: {s.ok_releases} of {s.releases} loadable "
             f"({100 * s.ok_releases / max(s.releases, 1):.1f}%)",
             f"SAE ids: {s.ok_saes:,} of {s.saes:,} loadable "
             f"({100 * s.ok_saes / max(s.saes, 1):.1f}%)",
             f"layouts read: {', '.join(s.layouts)}"]
    if unsupported:
        lines.append("\nreleases none of whose SAEs load, by reason:")
        for reason, names in sorted(s.refused_releases.items(), key=lambda kv: -len(kv[1])):
            lines += [f"  {reason} ({len(names)}):", *(f"    {n}" for n in names)]
        lines.append("\nSAE ids refused, by reason (all releases):")
        lines += [f"  {n:>6,}  {reason}" for reason, n in s.refused_saes.most_common()]
    return lines


def neuronpedia_url(neuronpedia_id: str, feature: int) -> str:
    """The feature's page on Neuronpedia: https://www.neuronpedia.org/<model>/<source>/<i>."""
    return f"{NEURONPEDIA}/{neuronpedia_id.strip('/')}/{int(feature)}"


def neuronpedia_id_of(source: dict | None, hookpoint: str) -> str:
    """The Neuronpedia id of the SAE an atlas loaded at `hookpoint` ("" when it has none).

    `source` is a pretrained atlas's `atlas.json` "source" (pretrained_atlas.py): its
    release and the folder each hookpoint's SAE came from."""
    release = RELEASES.get((source or {}).get("release") or "")
    path = ((source or {}).get("paths") or {}).get(hookpoint)
    if release is None or path is None:
        return ""
    return next((s.neuronpedia for s in release.saes if s.path == path), "")
