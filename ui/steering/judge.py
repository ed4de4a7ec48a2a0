"""The Steering tab's judge: the two written texts scored for the finder's concept as AxBench
scores steered text (on topic, follows the prompt, reads well), and every steering method
written and scored on the tab's prompt (sae_core/steer/judge.py and methods.py)."""

from __future__ import annotations

import html
import random
from typing import NamedTuple

import gradio as gr
import pandas as pd

from sae_core.lm import LM
from sae_core.steer.concept_tokens import concept_words
from sae_core.steer.effect import make_probe
from sae_core.steer.finder import SteeringFinding, find_steering
from sae_core.steer.generation import MAX_PROMPT_CHARS
from sae_core.steer.judge import GET_JUDGE, Judged, judge_texts
from sae_core.steer.methods import METHODS, method_steerings, write_one_concept

from ..serving import builds, session
from ..serving.errors import friendly, text_arg
from .finder import layer_range
from .inputs import MAX_CONCEPT_CHARS, MAX_RELATED_CHARS, gen_config

SCORES = ["On topic", "Follows the prompt", "Reads well", "Overall"]
METHOD_NAMES = {"finder": "Finder's pick", "clamp": "Clamped", "answer_only": "Answer only",
                "prompt_steer": "Prompt + steering", "kl_dose": "KL-controlled dose",
                "trained": "Trained direction", "diffmean": "Difference of means",
                "prompt": "Prompting only", "random": "Random feature"}
REFERENCE = "No steering (reference)"
MAX_WRITTEN_CHARS = 20_000
"""Longest written text taken back from the page (200 tokens are far shorter)."""
JUDGE_NOTE = ("Each score is 0 (no), 1 (partly) or 2 (yes), on AxBench's scale, from an "
              "offline judge model (Gemma 3 270M, not the model steered); *Overall* is their "
              "harmonic mean, 0 when any is 0. How the judge scores: docs/steering_judge.md.")
NO_CONCEPT = "*Type a concept below (under Find features) to score the texts for it.*"
COMPARE_EXPLAIN = ("**Compare methods** writes the Prompt greedily with every steering method "
                   "built for the Concept above (the finder's pick, clamped, answer only, the "
                   "concept asked for with and without the pick, a KL-controlled dose, a "
                   "trained direction, the difference of means, a random feature) and scores "
                   "each text. It takes a minute or two on a CPU. One prompt is a small sample: "
                   "the benchmark's numbers over its test half are in docs/steering.md.")


class ScorePanel(NamedTuple):
    """The scores under the two written texts."""

    note: gr.Markdown
    table: gr.Dataframe


class ComparePanel(NamedTuple):
    button: gr.Button
    note: gr.Markdown
    table: gr.Dataframe


def score_panel() -> ScorePanel:
    return ScorePanel(gr.Markdown(), gr.Dataframe(interactive=False, visible=False))


def compare_panel() -> ComparePanel:
    with gr.Row():
        button = gr.Button("Compare methods", size="sm", scale=1)
        gr.Markdown(COMPARE_EXPLAIN)
    return ComparePanel(button, gr.Markdown(),
                        gr.Dataframe(interactive=False, visible=False, wrap=True))


def connect_judge(run: gr.Button, written, scores: ScorePanel, scored: list,
                  compare: ComparePanel, compared: list, *, limit: int) -> None:
    """Wire the judge: `written` is the event of `run` that writes both texts; the scores
    follow it once it succeeds (the texts never wait on the judge). `scored`: prompt,
    concept, related words and the two texts; `compared`: the SAE set, prompt, concept,
    related words, first and last layer and max new tokens."""
    run.click(clear_scores, None, list(scores), queue=False, api_visibility="private")
    written.success(score_texts, scored, list(scores), api_visibility="private",
                    concurrency_limit=limit, concurrency_id="steer_judge")
    compare.button.click(compare_methods, compared, [compare.note, compare.table],
                         api_visibility="private", concurrency_limit=limit,
                         concurrency_id="steer_compare")


def clear_scores() -> tuple[str, gr.Dataframe]:
    """No scores while new texts are written (they would belong to the old ones)."""
    return "", gr.Dataframe(visible=False)


def written_text(value: object, field: str) -> str:
    """The plain text of a HighlightedText value as the page sends it (a list of
    {"token", "class_or_confidence"}, or of (token, class) pairs); "" for none."""
    if value is None:
        return ""
    parts = value if isinstance(value, list) else [None]
    tokens = [p.get("token") if isinstance(p, dict) else
              p[0] if isinstance(p, list | tuple) and p else None for p in parts]
    if not all(isinstance(t, str) for t in tokens):
        raise ValueError(f"{field} must be a text written by the tab")
    return text_arg("".join(tokens), field, MAX_WRITTEN_CHARS)


def loaded_judge(progress) -> LM:
    """The app's judge model, or a gr.Error saying how to install it."""
    progress(0.0, desc="the judge model (it loads the first time: ~20 s)")
    try:
        return session.judge_model()
    except RuntimeError as err:
        if GET_JUDGE in str(err):
            raise gr.Error(f"The judge model is not installed on this server: {GET_JUDGE}."
                           ) from None
        raise


def score_row(judged: Judged) -> list:
    return [judged.concept, judged.instruction, judged.fluency, round(judged.score, 2)]


def scored_for(words: tuple[str, ...]) -> str:
    also = f" (with {html.escape(', '.join(words[1:]))})" if len(words) > 1 else ""
    return f"Scored for **{html.escape(words[0])}**{also}."


def _inputs(prompt, concept, related) -> tuple[str, str, str]:
    return (text_arg(prompt, "The prompt", MAX_PROMPT_CHARS, empty_ok=False),
            text_arg(concept, "The concept", MAX_CONCEPT_CHARS),
            text_arg(related, "Related words", MAX_RELATED_CHARS))


@friendly("scoring the texts")
def score_texts(prompt, concept, related, plain, steered,
                progress=gr.Progress()):  # noqa: B008 - Gradio's idiom
    """(note, table): the texts without and with steering scored for the finder's concept;
    a note alone when no concept is typed or nothing is written yet."""
    prompt, concept, related = _inputs(prompt, concept, related)
    texts = [written_text(plain, "The text without steering"),
             written_text(steered, "The text with steering")]
    if not concept.strip():
        return NO_CONCEPT, gr.Dataframe(visible=False)
    words = concept_words(concept, related)
    if not any(t.strip() for t in texts):
        return "*Write both texts first; then they are scored.*", gr.Dataframe(visible=False)
    judge_lm = loaded_judge(progress)
    progress(0.5, desc="judging the texts")
    judged = judge_texts(judge_lm, prompt, words, texts, reference=texts[0])
    table = pd.DataFrame([[label, *score_row(j)] for label, j in
                          zip(("Without steering", "With steering"), judged, strict=True)],
                         columns=["text", *SCORES])
    return f"{scored_for(words)} {JUDGE_NOTE}", gr.Dataframe(table, visible=True)


def comparison_table(texts: dict[str, str], judged: dict[str, Judged], unsteered: str,
                     reference: Judged) -> pd.DataFrame:
    """One row per method written, best overall score first (ties in METHODS order), and
    the text without steering last."""
    order = sorted((m for m in METHODS if m in texts), key=lambda m: -round(judged[m].score, 2))
    rows = [[METHOD_NAMES[m], texts[m], *score_row(judged[m])] for m in order]
    rows.append([REFERENCE, unsteered, *score_row(reference)])
    return pd.DataFrame(rows, columns=["method", "text", *SCORES])


def comparison_note(words: tuple[str, ...], finding: SteeringFinding, texts: dict[str, str],
                    max_tokens: int) -> str:
    best = finding.best
    pick = ("No feature steered towards it within the fluency bound: only prompting ran."
            if best is None else f"The finder's pick: {best.name}"
            + ("." if best.strength is None else f" at strength {best.strength:g}."))
    missing = [METHOD_NAMES[m] for m in METHODS if m not in texts]
    left_out = (f" Not written: {', '.join(missing)} (nothing passed the dose rule)."
                if missing and best else "")
    return (f"{scored_for(words)} {pick}{left_out} Every text is greedy, up to {max_tokens} "
            f"new tokens, best overall score first. {JUDGE_NOTE} One prompt is a small "
            "sample: the benchmark's numbers over its test half are in docs/steering.md.")


@friendly("comparing the methods")
def compare_methods(folder, prompt, concept, related, first, last, max_tokens,
                    progress=gr.Progress()):  # noqa: B008 - Gradio's idiom
    """(note, table): every steering method's text for the prompt and concept, judged."""
    prompt, concept, related = _inputs(prompt, concept, related)
    builds.need_set(folder, "Every steering method's text, judged")
    words = concept_words(concept, related)
    layers, gen = layer_range(first, last), gen_config(max_tokens, 0, 0)
    judge_lm = loaded_judge(progress)
    loaded = session.open_atlas(folder)
    probe = make_probe(loaded.lm)

    def report(message: str, fraction: float, **_) -> None:
        progress(0.05 + 0.35 * fraction, desc=message)

    finding = find_steering(loaded, words[0], words[1:], layers=layers, probe=probe,
                            report=report)
    def training(message: str, fraction: float, **_) -> None:
        progress(0.4 + 0.2 * fraction, desc=message)

    methods = method_steerings(loaded, finding, probe, random.Random(0), report=training)
    progress(0.6, desc="writing a text with each method")
    unsteered, texts = write_one_concept(loaded, prompt, words[0], methods, gen)
    progress(0.85, desc="judging the texts")
    order = [m for m in METHODS if m in texts]
    reference, *judged = judge_texts(judge_lm, prompt, words,
                                     [unsteered, *(texts[m] for m in order)],
                                     reference=unsteered)
    table = comparison_table(texts, dict(zip(order, judged, strict=True)), unsteered,
                             reference)
    return (comparison_note(words, finding, texts, gen.max_new_tokens),
            gr.Dataframe(table, visible=True))
