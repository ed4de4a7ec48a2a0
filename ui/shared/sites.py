"""Layers and sites in the UI: how a hookpoint is shown, chosen and handed between tabs.

A set's SAEs read the residual stream (`layers.N`), the MLP output (`layers.N.mlp`) or the
attention output (`layers.N.attn`), one site or several. The UI names each by its *layer
key*: the layer number N for the residual stream, "N (MLP out)" / "N (attention out)" for
the others. Dropdowns, table cells and links carry keys; `hookpoint_at` reads any key back
(and a bare number at a layer without a residual SAE means that layer's only other SAE, as
for Hub MLP sets).
"""

from __future__ import annotations

import re

from sae_core.activations import SITES, hookpoint_name, parse_hookpoint

SITE_WORDS = {"mlp": "MLP out", "attn": "attention out"}
_KEY = re.compile(r"^\s*(?:layers\.)?(\d{1,9})(?:[ .](mlp|attn)|\s*\((MLP|attention) out\))?\s*$")
_SITE_OF_WORD = {"MLP": "mlp", "attention": "attn"}


def _parse(key) -> tuple[int, str | None]:
    """(layer, site or None when the key is a bare number) of any form of a key."""
    if isinstance(key, float) and key.is_integer():
        key = int(key)
    match = None if isinstance(key, bool | float) else _KEY.match(str(key))
    if match is None:
        raise ValueError(f"{str(key)[:40]!r} is not a layer")
    return int(match.group(1)), match.group(2) or _SITE_OF_WORD.get(match.group(3) or "")


def layer_key(hookpoint: str) -> int | str:
    """3 for `layers.3`, "3 (MLP out)" for `layers.3.mlp`, "3 (attention out)" for `.attn`."""
    layer, site = parse_hookpoint(hookpoint)
    return f"{layer} ({SITE_WORDS[site]})" if site else layer


def as_key(value) -> int | str:
    """A table cell or form value as a layer key: 3 and "3" are 3, "3 (MLP out)" stays;
    ValueError for anything that names no layer."""
    layer, site = _parse(value)
    return layer_key(hookpoint_name(layer, site or "resid"))


def site_label(hookpoint: str) -> str:
    """The key as text: "3", "3 (MLP out)"."""
    return str(layer_key(hookpoint))


def layer_choices(hookpoints: list[str]) -> list[tuple[str, int | str]]:
    """(shown text, key) per hookpoint, for a dropdown."""
    return [(site_label(h), layer_key(h)) for h in hookpoints]


def hookpoint_at(hookpoints: list[str], key, where: str = "this SAE set") -> str:
    """The hookpoint a key names among `hookpoints`: a layer number (int or digits) is the
    residual SAE at that layer, else the layer's SAE at the first of MLP, attention; "3
    (MLP out)", "3 mlp" and "layers.3.mlp" name that site. ValueError otherwise."""
    layer, site = _parse(key)
    for s in (site,) if site else SITES:
        if (h := hookpoint_name(layer, s)) in hookpoints:
            return h
    shown = ", ".join(map(site_label, hookpoints)) or "none"
    raise ValueError(f"layer {site_label(hookpoint_name(layer, site or 'resid'))} is not in "
                     f"{where}; its layers are {shown}")


def number_key(hookpoints: list[str], hookpoint: str) -> int | str:
    """The layer number when it names `hookpoint` in this set (the Steering tab's layer
    field takes numbers), else the short key "3.mlp" (its "More features" field takes it)."""
    layer, site = parse_hookpoint(hookpoint)
    return layer if hookpoint_at(hookpoints, layer) == hookpoint else f"{layer}.{site}"


def axis_title(hookpoints: list[str]) -> str:
    """"layer", or "layer (MLP out)" when every SAE reads one site other than the residual."""
    sites = {parse_hookpoint(h)[1] for h in hookpoints}
    return f"layer ({SITE_WORDS[next(iter(sites))]})" if len(sites) == 1 and "" not in sites \
        else "layer"


def by_site(hookpoints: list[str]) -> list[tuple[str, list[int], list[int]]]:
    """(site words, layer numbers, positions in `hookpoints`) per site in order of first
    appearance: one line per site in a plot over layers (words "" for the residual)."""
    groups: dict[str, tuple[list[int], list[int]]] = {}
    for i, h in enumerate(hookpoints):
        layer, site = parse_hookpoint(h)
        layers, where = groups.setdefault(site, ([], []))
        layers.append(layer)
        where.append(i)
    return [(SITE_WORDS.get(s, ""), *lw) for s, lw in groups.items()]
