"""The Steering tab's finder: features chosen by what they do to the text, a suggested dose
with its curve, and the two baselines a feature must beat (difference of means, prompting)."""

from __future__ import annotations

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from sae_core.explore.names import label_of, readable_names
from sae_core.steer.baselines import SENTENCES, diff_of_means, dosed_direction, prompted
from sae_core.steer.concept_tokens import concept_words
from sae_core.steer.dose import DoseCurve, DoseRule
from sae_core.steer.edits import DirectionSteer, Steering
from sae_core.steer.effect import make_probe
from sae_core.steer.finder import SteeringFinding, find_steering
from sae_core.steer.generation import MAX_PROMPT_CHARS, side_by_side, unsteered

from ..serving import builds, session
from ..serving.errors import friendly, text_arg
from ..serving.streaming import stream
from ..shared.sites import hookpoint_at, layer_key, number_key, site_label
from .inputs import MAX_CONCEPT_CHARS, MAX_LAYER, MAX_RELATED_CHARS, gen_config, whole

COLUMNS = ["layer", "feature", "name", "found because it", "reach %", "effect / cost"]
EXPLAIN = """Type a concept and, if you like, related words. Candidates are features that fire
on the word and features whose direction makes the model more likely to write the words. Each
is pushed a little, then more, on a few neutral prompts, and ranked by its *reach*: the
highest chance of the next word being a concept word it attains while the text stays fluent
(the next-word distribution moves by at most a set KL divergence). *Effect / cost*: how fast
that chance rises per unit of KL at the smallest push. The best get a dose, the smallest
strength that makes the concept clearly likely within that bound; a short test text on each
prompt then picks the suggestion."""


def layer_range(first, last) -> tuple[int, int]:
    """(first, last) as whole numbers; the library checks that they are in order and in
    the set."""
    try:
        return whole(first, "from layer", 0, MAX_LAYER), whole(last, "to layer", 0, MAX_LAYER)
    except ValueError as err:
        raise ValueError(f"the layer range must be two whole numbers ({err})") from None


def curve_figure(curve: DoseCurve, rule: DoseRule, title: str) -> go.Figure:
    """Concept probability and KL against strength, the rule's bounds and the dose."""
    xs = list(curve.strengths)
    fig = go.Figure()
    fig.add_scatter(x=xs, y=[100 * e.concept_prob for e in curve.effects], name="concept prob. %",
                    mode="lines+markers", line=dict(color="#d62728"))
    fig.add_scatter(x=xs, y=[e.kl for e in curve.effects], name="KL (nats)", yaxis="y2",
                    mode="lines+markers", line=dict(color="#1f77b4", dash="dot"))
    fig.add_hline(y=100 * rule.min_prob, line=dict(color="#d62728", width=1, dash="dash"))
    fig.add_hline(y=rule.max_kl, yref="y2", line=dict(color="#1f77b4", width=1, dash="dash"))
    if curve.dose is not None:
        fig.add_vline(x=curve.dose, line=dict(color="#2ca02c", width=2),
                      annotation_text=f"dose {curve.dose:g}")
    fig.update_layout(
        title=title, height=320, margin=dict(t=40, b=40, l=50, r=50),
        xaxis_title="strength (x the layer's typical size)",
        yaxis=dict(title="concept prob. %", rangemode="tozero"),
        yaxis2=dict(title="KL (nats)", overlaying="y", side="right", rangemode="tozero"),
        legend=dict(orientation="h", y=-0.3))
    return fig


def _summary(f: SteeringFinding) -> str:
    if f.best is None:
        return (f"No candidate stays near fluent at any strength tried for **{f.concept}**: "
                f"every push moved the text more than KL {2 * f.rule.max_kl:g}.")
    o, e = f.best, f.best.effect
    what = " + ".join(f"layer {c.layer} feature {c.feature}" for c in o.parts)
    share = "" if len(o.parts) == 1 else f" (each at {o.strength * o.share:.3g})"
    head = (f"**Suggested: {what} at strength {o.strength:g}**{share}. On the probe prompts the "
            f"next word is a concept word with probability {100 * e.concept_prob:.1f}% "
            f"(without steering {100 * f.p0:.2f}%), at KL {e.kl:.2f}.")
    check = next((c for t, c in f.trials if t == o), None)
    if check is not None:
        head += (f" Its short test texts named the concept on {check.named} of "
                 f"{check.prompts} neutral prompts.")
    if o.curve.dose is None:
        head += (f" No recipe reached the rule ({100 * f.rule.min_prob:g}% at KL <= "
                 f"{f.rule.max_kl:g}): this is the closest"
                 + (", past the fluency bound: expect broken text." if e.kl > f.rule.max_kl
                    else ", expect a weak effect."))
    return head + " Press **Use the suggestion**, then **Write both**; compare with the baselines."


@friendly("finding features")
def find_features(folder: str, concept: str, related: str, first, last):
    """The finder endpoint (api_name "find_features"): (table, summary, curve, suggestion)."""
    concept = text_arg(concept, "The concept", MAX_CONCEPT_CHARS)
    related = text_arg(related, "Related words", MAX_RELATED_CHARS)
    builds.need_set(folder, "Features that steer towards your concept")
    f = find_steering(session.open_atlas(folder), concept, related,
                      layers=layer_range(first, last))
    names, hooks = readable_names(folder), list(session.open_atlas(folder).saes)
    table = pd.DataFrame([[layer_key(c.hookpoint), c.feature,
                           label_of(names, c.hookpoint, c.feature),
                           c.source, round(100 * c.reach, 2), round(c.efficiency, 2)]
                          for c in f.candidates], columns=COLUMNS)
    if f.best is None:
        return table, _summary(f), None, None
    # layers as the Steering tab takes them: a number, or "3.mlp" for More features
    suggestion = {"features": [[number_key(hooks, c.hookpoint), c.feature]
                               for c in f.best.parts],
                  "strength": f.best.strength, "share": f.best.share}
    return (table, _summary(f), curve_figure(f.best.curve, f.rule, f.best.name), suggestion)


@friendly("using the suggestion")
def use_suggestion(suggestion: dict | None):
    """(layer, feature, strength, more features) of the finder's suggestion."""
    if not suggestion:
        raise gr.Error("Find features for a concept first.")
    parts = sorted(suggestion["features"], key=lambda p: not isinstance(p[0], int))
    (layer, feature), *more = parts
    if not isinstance(layer, int):
        raise gr.Error(f"The layer field steers the residual SAE of a layer; these features "
                       f"read another site: type them under More features as "
                       f"{layer}:{feature}:strength.")
    s = suggestion["strength"] * suggestion["share"]
    extra = ", ".join(f"{lay}:{feat}:{s:.3g}" for lay, feat in more)
    return layer, feature, round(s, 3), extra


@friendly("writing the baselines")
def write_baselines(folder, prompt, concept, related, layer, max_tokens, temperature, seed):
    """(difference-of-means text, prompting text, notes) for the same prompt and settings,
    streamed: once the direction is dosed, the two texts grow token by token, one after
    the other (ui/serving/streaming.py), then come whole with the notes."""
    prompt = text_arg(prompt, "The prompt", MAX_PROMPT_CHARS)
    concept = text_arg(concept, "The concept", MAX_CONCEPT_CHARS)
    related = text_arg(related, "Related words", MAX_RELATED_CHARS)
    builds.need_set(folder, "Features that steer towards your concept")
    loaded = session.open_atlas(folder)
    words = concept_words(concept, related)
    h = hookpoint_at(list(loaded.saes), whole(layer, "layer"))
    gen = gen_config(max_tokens, temperature, seed)
    v_D = diff_of_means(loaded, h, words)
    rule = DoseRule()
    s, curve = dosed_direction(loaded, h, v_D, words, make_probe(loaded.lm), rule)
    if s is None:
        raise ValueError("the difference-of-means direction moves the text too far at "
                         "every strength tried")
    asked = prompted(prompt, words[0])

    def work(report) -> tuple[str, str]:
        mean_text = side_by_side(loaded, prompt, Steering((DirectionSteer(h, v_D, s),)), gen,
                                 on_text=lambda _plain, steered: report((steered, ""))).steered
        return mean_text, unsteered(loaded, asked, gen,
                                    on_text=lambda text: report((mean_text, text)))
    dose = ("dosed by the same rule and text check as the features" if curve.dose is not None
            else "no strength passed the rule; the one whose test texts named the concept most")
    notes = (f"Difference of means at layer {site_label(h)}: the mean activation on "
             f"{len(SENTENCES)} sentences per concept word minus the same sentences about "
             f"everyday things, at strength {s:g} ({dose}). Prompting: the prompt becomes "
             f"{asked!r}, no steering.")
    for kind, texts in stream(work):
        yield (*texts, notes if kind == "done" else "*Writing the baselines...*")
