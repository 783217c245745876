"""MIND-style dialogues (training/data/text/dialogues.py) from the real offline sources."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from training.data.synth.split import text_split
from training.data.text.dialogues import STYLES, WORDNET_DIR, generate, wordnet_entries
from training.data.text.normalize import is_normalized, normalize_text, number_words

pytestmark = pytest.mark.skipif(not (WORDNET_DIR / "data.noun").is_file(),
                                reason="Debian wordnet-base is not installed (make system)")


@pytest.fixture(scope="module")
def entries():
    return wordnet_entries()


def test_wordnet_entries_have_a_gloss_and_an_example_using_the_word(entries) -> None:
    assert len(entries) > 10_000
    for e in entries[::500]:
        assert e.gloss and e.examples and all(e.word in x.lower() for x in e.examples)


def test_dialogues_state_only_their_source_and_split_by_it(entries) -> None:
    """Every style, two speakers taking turns, normalised text; a teacher-student dialogue
    repeats its entry's gloss, an arithmetic one the right result; the split is the source's."""
    ds = list(generate(40, seed=1, entries=entries))
    assert {d.style for d in ds} == set(STYLES)
    assert [d.id for d in ds] == [d.id for d in generate(40, seed=1, entries=entries)]
    for d in ds:
        assert d.split == text_split(d.source)
        assert [s for s, _ in d.turns] == ["AB"[i % 2] for i in range(len(d.turns))]
        assert all(is_normalized(t) for _, t in d.turns)
        if d.style == "layman_expert":
            a, op, b = d.source.split()
            r = {"plus": int(a) + int(b), "times": int(a) * int(b), "minus": int(a) - int(b)}[op]
            assert number_words(r) in d.turns[1][1]
        if d.style == "teacher_student":
            assert normalize_text(d.source.split(": ", 1)[1]) in d.turns[1][1]


def test_cli_writes_dialogues_and_lm_text_per_split(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "clients.cli", "data", "dialogues", "--out",
                           str(tmp_path), "--count", "60", "--seed", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in (tmp_path / "dialogues.jsonl").read_text().splitlines()]
    assert len(lines) == 60
    for split in ("train", "dev", "test"):
        want = [t["text"] for d in lines if d["split"] == split for t in d["turns"]]
        assert (tmp_path / f"text_{split}.txt").read_text().splitlines() == want
    assert json.loads(proc.stdout)["turns"] == sum(len(d["turns"]) for d in lines)


def test_wordnet_lm_text_is_normalised_and_train_split_only() -> None:
    """WordNet's glosses and examples as LM text: normalised sentences, and only those whose
    text hash is train reach `chorus lm build --wordnet`'s text."""
    from training.data.text.sources import wordnet_sentences
    from training.lm.text import LmTextConfig, train_sentences

    wn = wordnet_sentences()
    assert len(wn) > 50_000 and all(is_normalized(s) for s in wn[::1000])
    lm = set(train_sentences(LmTextConfig(template_sentences=1, word_sequences=0, wordnet=True)))
    plain = set(train_sentences(LmTextConfig(template_sentences=1, word_sequences=0)))
    added = lm - plain
    assert added and added <= set(wn)
    assert all(text_split(s) == "train" for s in added)
    held = [s for s in wn if text_split(s) != "train"]
    assert held and not lm & set(held)
