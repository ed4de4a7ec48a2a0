"""The steering benchmark's split is fixed, and nothing tuned reads the test half."""

import hashlib
import json
import re
from pathlib import Path

from sae_core.steer.concept_split import SPLIT_FILE, load_half

ROOT = Path(__file__).resolve().parents[2]
PINNED_TEST = "7d443c9f4ad36eabfac383eb9a41745df915f70038097778c5f2cd280cd45adc"
"""sha256 of the test half as committed (its concepts, words and prompts): a change to the
test half fails here, and needs a new split and a note of why."""
TUNED = [*sorted((ROOT / "sae_core" / "steer").glob("*.py")),
         ROOT / "sae_core" / "explore" / "concepts.py", ROOT / "assets" / "steering_presets.json",
         ROOT / "bench" / "steering_concepts.py", ROOT / "ui" / "steering" / "presets.py",
         ROOT / "ui" / "tour" / "text.py", ROOT / "scripts" / "steering_effect.py"]
"""What tunes or presents steering: the finder and its rules, the presets, the old benchmark
that tuned the finder, the Tour's example."""


def _digest(half) -> str:
    blob = json.dumps({"prompts": half.prompts, "concepts": half.concepts}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def test_the_test_half_is_the_committed_one():
    assert _digest(load_half("test")) == PINNED_TEST


def test_halves_are_disjoint_and_large_enough():
    dev, test = load_half("dev"), load_half("test")
    assert len(dev.concepts) >= 30 and len(test.concepts) >= 30
    assert len(dev.prompts) + len(test.prompts) >= 6
    dev_words = {w.lower() for ws in dev.concepts.values() for w in ws} | {
        c.lower() for c in dev.concepts}
    test_words = {w.lower() for ws in test.concepts.values() for w in ws} | {
        c.lower() for c in test.concepts}
    assert not dev_words & test_words
    assert not set(dev.prompts) & set(test.prompts)


def test_no_test_half_concept_or_prompt_appears_in_tuning_code_or_presets():
    test = load_half("test")
    names = sorted({c.lower() for c in test.concepts})
    for path in TUNED:
        if not path.exists() or path.name == "concept_split.py":
            continue
        text = path.read_text(encoding="utf-8").lower()
        quoted = set(re.findall(r"[\"']([^\"'\n]{1,60})[\"']", text))
        found = [c for c in names if c in quoted or any(
            re.search(rf"(?<!\w){re.escape(c)}(?!\w)", q) for q in quoted if len(q) < 40)]
        assert not found, f"{path.relative_to(ROOT)} names test-half concepts {found}"
        assert not [p for p in test.prompts if p.lower() in text], path


def test_presets_use_no_test_half_word():
    presets = json.loads((ROOT / "assets" / "steering_presets.json").read_text())["presets"]
    test_words = {w.lower() for ws in load_half("test").concepts.values() for w in ws}
    for p in presets:
        used = {p["concept"].lower(), *(w.lower() for w in p["concept_words"])}
        assert not used & test_words, (p["slug"], used & test_words)


def test_split_file_is_where_the_module_reads():
    assert SPLIT_FILE == ROOT / "assets" / "steering_concepts.json"
