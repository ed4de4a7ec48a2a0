"""The Steering tab's writing: its inputs checked, the same prompt written with and without
the steering (one batch of two rows), whole or streamed token by token, and the words
that differ highlighted."""

from __future__ import annotations

import difflib
import re

from sae_core.atlas.layout import LoadedAtlas
from sae_core.steer.edits import FeatureSteer, Steering
from sae_core.steer.generation import MAX_PROMPT_CHARS, SideBySide, side_by_side

from ..serving import builds, session
from ..serving.errors import friendly, text_arg
from ..serving.streaming import stream
from ..shared.sites import hookpoint_at, site_label
from .inputs import MAX_EXTRA_CHARS, MAX_LAYER, gen_config, steering_strength, whole

ONLY_PLAIN, ONLY_STEERED = "only without steering", "only with steering"
DIFF_COLORS = {ONLY_PLAIN: "#9ecbff", ONLY_STEERED: "#ffb86b"}

STEER_WHAT = "Steered and unsteered texts side by side"

def parse_extra(text: str | None) -> list[tuple[int | str, int, float]]:
    """More features as "layer:feature:strength" items separated by commas or spaces; the
    layer may name a site, "3.mlp" or "3.attn" (ui/shared/sites.py). Each number is checked here,
    at the edge, as the main feature's are."""
    items = []
    for part in re.split(r"[,\s;]+", (text or "").strip()):
        if not part:
            continue
        bits = part.split(":")
        try:
            if len(bits) != 3:
                raise ValueError("")
            layer = (whole(bits[0], "layer", 0, MAX_LAYER) if bits[0].isdecimal()
                     else _site_key(bits[0]))
            items.append((layer, whole(bits[1], "feature"), steering_strength(bits[2])))
        except ValueError as err:
            why = f" ({err})" if str(err) else ""
            raise ValueError(f"could not read {part[:40]!r}{why}: write more features as "
                             "layer:feature:strength, e.g. 13:90:0.5") from None
    return items


def _site_key(text: str) -> str:
    """A "3.mlp" layer of a "More features" item, or ValueError."""
    hookpoint_at([f"layers.{text}"], text)  # the form alone: the set is checked later
    return text


def steering_of(folder: str, layer, feature, strength, mode: str, positions: str,
                extra: str | None) -> tuple[LoadedAtlas, Steering]:
    loaded = session.open_atlas(builds.need_set(folder, STEER_WHAT))
    items = [(whole(layer, "layer", 0, MAX_LAYER), whole(feature, "feature"),
              steering_strength(strength))]
    # a layer number names the residual SAE first (ui/shared/sites.py), as in every tab
    feats = tuple(FeatureSteer(hookpoint_at(list(loaded.saes), lay), f, s, mode)
                  for lay, f, s in items + parse_extra(extra))
    return loaded, Steering(feats, positions)


def diff_highlight(plain: str, steered: str) -> tuple[list, list]:
    """Word-level diff as HighlightedText values: words only one side has are marked."""
    a, b = re.findall(r"\s+|\S+", plain), re.findall(r"\s+|\S+", steered)
    left, right = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        same = op == "equal"
        if i2 > i1:
            left.append(("".join(a[i1:i2]), None if same else ONLY_PLAIN))
        if j2 > j1:
            right.append(("".join(b[j1:j2]), None if same else ONLY_STEERED))
    return left, right


def _request(folder, prompt, layer, feature, strength, mode, positions, extra, max_tokens,
             temperature, seed) -> tuple:
    """(loaded atlas, prompt, steering, generation settings), every input checked."""
    prompt = text_arg(prompt, "The prompt", MAX_PROMPT_CHARS)
    extra = text_arg(extra, "More features", MAX_EXTRA_CHARS)
    loaded, steering = steering_of(folder, layer, feature, strength, mode, positions, extra)
    return loaded, prompt, steering, gen_config(max_tokens, temperature, seed)


@friendly("writing the texts")
def run_steering(*inputs):
    """(unsteered, steered, notes), whole: `stream_steering`'s last answer."""
    loaded, prompt, steering, gen = _request(*inputs)
    out = side_by_side(loaded, prompt, steering, gen)
    return (*diff_highlight(out.unsteered, out.steered), _notes(steering, out))


@friendly("writing the texts")
def stream_steering(folder, prompt, layer, feature, strength, mode, positions, extra,
                    max_tokens, temperature, seed):
    """The steering endpoint (api_name "steer"): (unsteered, steered, notes), first as the
    two texts grow token by token (one batch, as `run_steering`), then whole with notes."""
    loaded, prompt, steering, gen = _request(folder, prompt, layer, feature, strength, mode,
                                             positions, extra, max_tokens, temperature, seed)
    for kind, value in stream(lambda report: side_by_side(
            loaded, prompt, steering, gen, on_text=lambda *texts: report(texts))):
        if kind == "part":
            yield (*diff_highlight(*value), "*Writing both texts...*")
        else:
            yield (*diff_highlight(value.unsteered, value.steered), _notes(steering, value))


def _notes(steering: Steering, out: SideBySide) -> str:
    """What was steered, at what size, and how long the writing took."""
    what = "; ".join(
        f"layer {site_label(f.hookpoint)} feature {f.feature}: {f.mode} {f.strength:g} x "
        f"{out.norms[f.hookpoint]:.1f}" for f in steering.features)
    notes = [f"{what} (the layer's typical size). Wrote {out.n_tokens[0]} + "
             f"{out.n_tokens[1]} tokens in one batch in {out.seconds:.1f} s."]
    if out.measured:
        notes.append(f"These SAEs carry no typical norm for {', '.join(out.measured)}: it was "
                     "measured now on a few corpus windows.")
    return " ".join(notes)
