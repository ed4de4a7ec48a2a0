"""The Tour tab's words: the plain introduction and the example as Markdown (no Gradio),
and the example's record of one depth (`DepthFeature`, which ui/tour/tab.py fills)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..layer_map.view import TASK_NAMES
from ..shared.sites import site_label

if TYPE_CHECKING:
    from sae_core.explore.feature_page import FeaturePage, LabelInfo, Snippet

INTRO = """## Welcome: a tour in one click
A language model reads text one word (or piece of a word) at a time. For every word it
keeps a long list of numbers, and it reworks those numbers in many steps, called
**layers**, before it writes its next word. Those numbers are hard for people to read.

A **sparse autoencoder** is a small helper trained to describe each layer's numbers with a
handful of **features**, chosen from thousands. Each feature tends to stand for one idea:
"a city", "the end of a sentence", "talk about the sea". So instead of a wall of numbers, we
can say which few ideas the model has in mind at each step.

Press the button to see it on one sentence: for one word, the strongest feature at a few
layers and the passages where that feature is strongest. Then we push one feature while
the model writes, to show that features can also steer what it says."""
STEER_INTRO = """### Steering: push one idea while the model writes
The model answers the same request twice. On the right, one feature is pushed at every
step; on the left, nothing is changed. Words that differ are highlighted. The Steering
tab holds the same example: change the feature or the strength there."""
NO_PRESET = ("*There is no steering preset for this SAE set, so the steering part of the "
             "example is skipped. The Steering tab finds features for any word.*")
NO_FEATURE = ("no feature fires on this word here (the first word of a text and a few "
              "others carry unusually large numbers that the helpers were not trained on).")
NO_INDEX = ("this SAE set has no feature index yet, so we cannot show where it fires (the "
            "Features tab can build it).")
N_SNIPPETS = 3


@dataclass(frozen=True)
class DepthFeature:
    """The strongest feature on the word at one layer."""

    layer: int
    feature: int
    """-1 when no feature fires there (or the token is a massive activation)."""
    activation: float
    page: FeaturePage | None
    """Its page from the feature index; None without an index or a feature."""
    hookpoint: str = ""


def md_escape(text: str) -> str:
    """Text shown as is in Markdown: markup characters escaped, on one line."""
    text = re.sub(r"\s+", " ", text)
    return re.sub(r"([\\`*_{}\[\]<>()#+!|~-])", r"\\\1", text)


def snippet_line(snippet: Snippet) -> str:
    """The snippet on one line, the token where the feature is strongest in bold."""
    parts = [md_escape(p) for p in snippet.pieces]
    peak = snippet.pieces[snippet.peak]
    lead = " " if peak[:1].isspace() else ""
    parts[snippet.peak] = f"{lead}**{md_escape(peak.strip())}**" if peak.strip() else peak
    return "…" + "".join(parts).strip() + "…"


def depth_name(layer: int, n_layers: int) -> str:
    frac = layer / max(n_layers - 1, 1)
    names = ("Early on", "In the lower middle", "In the upper middle", "Near the end")
    return names[min(int(frac * 4), 3)]


def best_label(page: FeaturePage) -> LabelInfo | None:
    """The most consistent of the feature's labels that is more than chance (lift > 2)."""
    found = [lab for lab in page.labels if lab.lift > 2 and lab.consistency >= 0.5]
    return max(found, key=lambda lab: lab.consistency, default=None)


def explain(label: str) -> str:
    """spaCy's plain name of a label ("PROPN" -> "proper noun"), else the label."""
    try:
        import spacy  # only here: the labels come from spaCy, the tour needs no pipeline

        return spacy.explain(label) or label
    except ImportError:
        return label


def _layer(d: DepthFeature) -> str:
    """"3", or "3 (MLP out)" where the set reads another site than the residual stream."""
    return site_label(d.hookpoint) if d.hookpoint else str(d.layer)


def depth_markdown(d: DepthFeature, n_layers: int) -> str:
    head = f"- **{depth_name(d.layer, n_layers)} (layer {_layer(d)} of {n_layers}):** "
    if d.feature < 0:
        return head + NO_FEATURE
    head += f"feature {d.feature} ([open its page](?layer={d.layer}&feature={d.feature})). "
    if d.page is None:
        return head + "But " + NO_INDEX
    if not d.page.top:
        return head + "It fired nowhere in the indexed text."
    lines = [head + "It is strongest in passages like these (in bold, the word where it "
             "is strongest):"]
    shown = list(dict.fromkeys(snippet_line(s) for s in d.page.top))[:N_SNIPPETS]
    lines += [f"  - {line}" for line in shown]
    label = best_label(d.page)
    if label is not None:
        lines.append(f"  - {round(100 * label.consistency)}% of the words it fires on share "
                     f"one {TASK_NAMES.get(label.task, label.task)}: "
                     f"*{md_escape(explain(label.label))}*.")
    return "\n".join(lines)


def words_markdown(text: str, word: str, found: list[DepthFeature], n_layers: int) -> str:
    """The example in plain words."""
    lines = [f"**The sentence:** {md_escape(text)}", "",
             f"**The word we follow:** “{md_escape(word)}”", ""]
    lines += [depth_markdown(d, n_layers) for d in found]
    return "\n".join(lines)


def numbers_markdown(word: str, found: list[DepthFeature]) -> str:
    """The same example with numbers: one table row per layer."""
    rows = [f"| layer | feature | strength on “{md_escape(word)}” | fires on (share of "
            "indexed words) | labels (consistency, lift) | pushes the next word towards |",
            "|---|---|---|---|---|---|"]
    for d in found:
        if d.feature < 0:
            rows.append(f"| {_layer(d)} | none | | | | |")
            continue
        page = d.page
        density = f"{100 * page.density:.3f}%" if page else "no index"
        labels = "; ".join(f"{md_escape(lab.label)} ({lab.consistency:.2f}, {lab.lift:.1f}x)"
                           for lab in page.labels) if page else ""
        promoted = ", ".join(f"“{md_escape(t.strip())}”" for t, _ in page.promoted[:8]
                             if t.strip()) if page else ""
        rows.append(f"| {_layer(d)} | {d.feature} | {d.activation:.2f} | {density} | "
                    f"{labels} | {promoted} |")
    return "\n".join(rows)
