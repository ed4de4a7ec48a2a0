"""What counts as a concept in the model's output: the typed word plus related words, and the
token ids that spell them (the targets of the output-side measures in effect.py)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from ..errors import BadInput, check_text

MAX_WORDS = 24
MAX_WORD_CHARS = 40


def concept_words(concept: str, related: Iterable[str] | str = ()) -> tuple[str, ...]:
    """The typed concept and the related words a user adds ("sea, waves, beach" or a list),
    stripped, deduplicated case-insensitively, in order; BadInput (a ValueError) for bad
    input. Lone surrogates become U+FFFD (no tokenizer encodes them)."""
    limit = MAX_WORDS * (MAX_WORD_CHARS + 2)
    if concept is None or (isinstance(concept, str) and not concept.strip()):
        raise BadInput("concept", "type a word or short phrase to steer towards (the concept)")
    concept = check_text(concept, "concept", max_chars=limit)
    if isinstance(related, str):
        related = re.split(r"[,;\n]+", check_text(related, "related words", max_chars=limit,
                                                    empty_ok=True))
    if isinstance(related, dict | bytes) or not isinstance(related, Iterable):
        raise BadInput("related words", "related words must be text (separated by commas) "
                                        "or a list of words")
    related = [check_text(w, "related words", max_chars=limit, empty_ok=True)
               for w in list(related)[:4 * MAX_WORDS]]
    words, seen = [], set()
    for w in [concept, *related]:
        w = " ".join(w.split())
        if not w or w.lower() in seen:
            continue
        if len(w) > MAX_WORD_CHARS:
            raise BadInput("concept", f"keep each word under {MAX_WORD_CHARS} characters: "
                                      f"{w[:20]!r}…")
        words.append(w)
        seen.add(w.lower())
    if len(words) > MAX_WORDS:
        raise BadInput("related words", f"at most {MAX_WORDS} words per concept, got "
                                        f"{len(words)}")
    return tuple(words)


def spellings(word: str) -> tuple[str, ...]:
    """How a word starts in running text: with or without a leading space, as typed,
    lower-case and capitalised."""
    forms = dict.fromkeys(f for w in (word, word.lower(), word[:1].upper() + word[1:])
                          for f in (f" {w}", w))
    return tuple(forms)


def concept_token_ids(tokenizer, words: Iterable[str]) -> Tensor:
    """(C,) sorted ids of the one-token spellings of the words. Only when no word has one,
    the first tokens of their spaced spellings (" astr" for " astronaut"): such fragments
    start many other words, and features that promote them write fragments, not the concept
    (measured: "Dor Dor Dor" for rain's "drizzle")."""
    special = set(tokenizer.all_special_ids)  # an unknown word is no spelling of it
    single: set[int] = set()
    firsts: set[int] = set()
    for word in words:
        for form in spellings(word):
            ids = [i for i in tokenizer(form, add_special_tokens=False).input_ids
                   if i not in special]
            if len(ids) == 1:
                single.add(ids[0])
            elif ids and form.startswith(" "):
                firsts.add(ids[0])
    chosen = single or firsts
    if not chosen:
        raise BadInput("concept", "none of the concept's words can be written by this "
                                  "tokenizer")
    return torch.tensor(sorted(chosen), dtype=torch.long)  # cpu: ids; readers move them


def count_mentions(text: str, words: Sequence[str]) -> int:
    """Whole-word, case-insensitive occurrences of any of `words` in `text`."""
    alternatives = "|".join(sorted(map(re.escape, words), key=len, reverse=True))
    return len(re.findall(rf"(?<!\w)(?:{alternatives})(?!\w)", text, flags=re.IGNORECASE))
