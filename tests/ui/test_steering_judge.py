"""The Steering tab's judge: the two texts scored, every method compared and ranked, with the
judge model and the library's heavy steps replaced by fakes (no model loads)."""

import threading
import time
from types import SimpleNamespace

import gradio as gr
import pytest

from sae_core.steer.judge import GET_JUDGE, Judged
from sae_core.steer.methods import METHODS
from tests.steer.preset_helpers import planted_copy, tiny_search  # noqa: F401 (a fixture)
from ui.serving import session
from ui.steering import judge as steering_judge
from ui.steering.judge import (
    METHOD_NAMES,
    NO_CONCEPT,
    REFERENCE,
    SCORES,
    compare_methods,
    score_texts,
)

PROMPT = "Write a short note to a friend."
PLAIN = [{"token": "Dear friend, ", "class_or_confidence": None},
         {"token": "see you soon.", "class_or_confidence": "only without steering"}]
STEERED = [("Dear friend, ", None), ("the ocean waves", "only with steering")]
# method -> (concept, instruction, fluency) the fake judge gives its text
GRADES = {"finder": (2, 2, 1), "clamp": (1, 1, 1), "answer_only": (2, 1, 2),
          "prompt_steer": (2, 2, 2), "kl_dose": (1, 1, 1), "trained": (0, 2, 2),
          "prompt": (1, 2, 2), "random": (0, 2, 2), "plain": (0, 2, 2)}


class FakeJudge:
    """judge_texts: grades read off the text ("text <method>"), each call recorded."""

    def __init__(self):
        self.calls = []

    def __call__(self, judge_lm, prompt, words, texts, *, reference):
        self.calls.append(SimpleNamespace(lm=judge_lm, prompt=prompt, words=tuple(words),
                                          texts=list(texts), reference=reference))
        out = []
        for t in texts:
            key = t.removeprefix("text ") if t.startswith("text ") else \
                "finder" if "ocean" in t else "plain"
            out.append(Judged(*GRADES[key]))
        return out


@pytest.fixture
def judge(monkeypatch):
    fake, the_lm = FakeJudge(), object()
    monkeypatch.setattr(session, "judge_model", lambda: the_lm)
    monkeypatch.setattr(steering_judge, "judge_texts", fake)
    fake.lm = the_lm
    return fake


def test_both_texts_are_scored_for_the_concept(judge):
    note, table = score_texts(PROMPT, "ocean", "sea, waves", PLAIN, STEERED)
    call, = judge.calls
    assert call.lm is judge.lm and call.prompt == PROMPT
    assert call.words == ("ocean", "sea", "waves")
    assert call.texts == ["Dear friend, see you soon.", "Dear friend, the ocean waves"]
    assert call.reference == call.texts[0]  # fluency is relative to the unsteered text
    assert table.visible and table.value["headers"] == ["text", *SCORES]
    assert table.value["data"] == [["Without steering", 0, 2, 2, 0.0],
                                   ["With steering", 2, 2, 1, 1.5]]  # 3 / (1/2 + 1/2 + 1)
    assert "**ocean** (with sea, waves)" in note
    assert "judge model" in note and "AxBench" in note and "docs/steering_judge.md" in note


def test_no_concept_is_a_note_not_an_error(monkeypatch):
    def never():
        raise AssertionError("the judge must not load without a concept")

    monkeypatch.setattr(session, "judge_model", never)
    for concept in ("", "   ", None):
        note, table = score_texts(PROMPT, concept, "sea", PLAIN, STEERED)
        assert note == NO_CONCEPT and not table.visible
    note, table = score_texts(PROMPT, "ocean", "", None, None)  # nothing written yet
    assert "Write both" in note and not table.visible


def test_bad_input_is_a_clear_error(judge, monkeypatch):
    for args, match in (((PROMPT, "x" * 61, "", PLAIN, STEERED), "concept is 61 characters"),
                        (("  ", "ocean", "", PLAIN, STEERED), "prompt is empty"),
                        ((PROMPT, "ocean", "r" * 1001, PLAIN, STEERED), "Related words is"),
                        ((PROMPT, "ocean", "", 5, STEERED), "written by the tab"),
                        ((PROMPT, "ocean", "", [{"token": 3}], STEERED), "written by the tab")):
        with pytest.raises(gr.Error, match=match):
            score_texts(*args)
    assert judge.calls == []

    def missing():
        raise RuntimeError(f"the judge model is missing: {GET_JUDGE}")

    monkeypatch.setattr(session, "judge_model", missing)
    with pytest.raises(gr.Error, match="not installed on this server: install it"):
        score_texts(PROMPT, "ocean", "", PLAIN, STEERED)


@pytest.fixture
def library(monkeypatch):
    """The heavy library steps as fakes that record what they were given."""
    seen = SimpleNamespace()
    loaded = SimpleNamespace(lm="the steered lm")
    monkeypatch.setattr(session, "open_atlas", lambda folder: seen.__dict__.update(
        folder=folder) or loaded)
    monkeypatch.setattr(steering_judge, "make_probe", lambda lm: ("probe", lm))
    best = SimpleNamespace(name="layer 2 feature 7", strength=0.5)

    def find(lo, concept, related, *, layers, probe, report):
        seen.find = (lo, concept, tuple(related), layers, probe)
        report("pushing 3 candidates", 0.5)
        return SimpleNamespace(best=best)

    def methods(lo, finding, probe, rng, report):
        seen.methods = (lo, finding, probe)
        report("training the direction: step 1", 0.5)
        return "the steerings"

    def write(lo, prompt, concept, steerings, gen):
        seen.write = (lo, prompt, concept, steerings, gen)
        return "plain text", {m: f"text {m}" for m in METHODS if m != "diffmean"}

    monkeypatch.setattr(steering_judge, "find_steering", find)
    monkeypatch.setattr(steering_judge, "method_steerings", methods)
    monkeypatch.setattr(steering_judge, "write_one_concept", write)
    return seen


def test_every_method_is_compared_best_first(judge, library):
    note, table = compare_methods("atlas", PROMPT, "ocean", "sea", 1, 2, 17)
    assert library.folder == "atlas"
    lo, prompt, concept, steerings, gen = library.write
    assert (prompt, concept, steerings) == (PROMPT, "ocean", "the steerings")
    assert (gen.max_new_tokens, gen.temperature) == (17, 0)  # greedy, the tab's max tokens
    assert library.find == (lo, "ocean", ("sea",), (1, 2), ("probe", "the steered lm"))
    call, = judge.calls
    assert call.lm is judge.lm and call.prompt == PROMPT and call.words == ("ocean", "sea")
    assert call.reference == "plain text" and call.texts[0] == "plain text"
    assert table.value["headers"] == ["method", "text", *SCORES]
    rows = table.value["data"]
    overall = [r[-1] for r in rows[:-1]]
    assert overall == sorted(overall, reverse=True)  # best first
    assert [r[0] for r in rows] == [  # ties stay in METHODS order; the reference last
        "Prompt + steering", "Finder's pick", "Answer only", "Prompting only", "Clamped",
        "KL-controlled dose", "Trained direction", "Random feature", REFERENCE]
    assert rows[0] == ["Prompt + steering", "text prompt_steer", 2, 2, 2, 2.0]
    assert rows[-1] == [REFERENCE, "plain text", 0, 2, 2, 0.0]
    assert "Not written: Difference of means" in note and "layer 2 feature 7" in note
    assert "17 new tokens" in note and "docs/steering.md" in note
    assert set(METHOD_NAMES) == set(METHODS)


def test_the_comparison_checks_its_input_first(judge, library):
    good = ("atlas", PROMPT, "ocean", "", 1, 2, 17)
    for i, bad, match in ((1, "", "prompt is empty"), (2, "", "type a word"),
                          (2, "x" * 61, "concept is 61 characters"),
                          (4, "a", "two whole numbers"), (6, 500, "max tokens")):
        args = list(good)
        args[i] = bad
        with pytest.raises(gr.Error, match=match):
            compare_methods(*args)
    assert compare_methods("", *good[1:]) == gr.skip()  # no set yet: an info, no error
    assert judge.calls == [] and not hasattr(library, "write")


def test_the_tab_wires_the_judge_after_the_texts():
    from ui.steering.tab import STEER_CONCURRENCY, build_steering_tab

    with gr.Blocks() as demo:
        picker = gr.Dropdown([], value=None)
        build_steering_tab(picker)
    fns = {fn.name: fn for fn in demo.fns.values()}
    score, compare = fns["score_texts"], fns["compare_methods"]
    assert demo.fns[score.trigger_after].name == "stream_steering"
    assert score.trigger_only_on_success  # the texts never wait on the judge
    for fn in (score, compare, fns["clear_scores"]):
        assert fn.api_visibility == "private"
    assert score.concurrency_limit == compare.concurrency_limit == STEER_CONCURRENCY
    buttons = [b for b in demo.blocks.values() if isinstance(b, gr.Button)]
    assert "Compare methods" in [b.value for b in buttons]


def test_the_judge_model_loads_once(monkeypatch):
    loads = []

    def load():
        loads.append(1)
        time.sleep(0.05)  # concurrent callers overlap
        return object()

    monkeypatch.setattr(session, "_judges", type(session._judges)())
    monkeypatch.setattr(session, "load_judge", load)
    got = []
    threads = [threading.Thread(target=lambda: got.append(session.judge_model()))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1 and len({id(g) for g in got}) == 1
    assert session.judge_model() is got[0] and len(session._judges) == 1


@pytest.mark.usefixtures("tiny_search")
def test_the_comparison_runs_the_library_on_a_planted_atlas(tiny_atlas, loaded, tmp_path,
                                                            monkeypatch):
    """The real finder, methods and writing on the tiny atlas; only the judge is a fake."""
    planted, _ = planted_copy(tiny_atlas, loaded.lm, tmp_path)
    got = []

    def judge(judge_lm, prompt, words, texts, *, reference):
        got.append((prompt, words, list(texts), reference))
        return [Judged(1, 1, 1) for _ in texts]

    monkeypatch.setattr(session, "judge_model", object)
    monkeypatch.setattr(steering_judge, "judge_texts", judge)
    shown = []

    def progress(fraction, desc=""):
        shown.append((fraction, desc))

    note, table = compare_methods(str(planted.folder), "the cat sat on the", "Paris", "", 0, 2,
                                  4, progress=progress)
    (prompt, words, texts, reference), = got
    steps = [f for f, d in shown if d.startswith("training the direction: step")]
    assert steps and steps == sorted(steps) and all(0.4 < f < 0.6 for f in steps)
    assert prompt == "the cat sat on the" and words[0] == "Paris" and texts[0] == reference
    rows = table.value["data"]
    assert rows[-1][:2] == [REFERENCE, reference] and len(rows) == len(texts)
    assert "Prompting only" in [r[0] for r in rows]  # written with or without a pick
    assert all(r[2:] == [1, 1, 1, 1.0] for r in rows) and "Paris" in note
