"""Timed words from emissions: the incremental builder the greedy decoders use (`Words`)
equals `hypothesis()` of the whole emission list at every point of a growing utterance."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from models.decoding.hypothesis import Word, Words, hypothesis, shift_words
from models.tokenizer import BLANK, CharTokenizer

CHARS = CharTokenizer()
# pieces as subword units and grams spell them: a leading space starts a word
PIECES = CharTokenizer(symbols=(BLANK, " ", "a", "b", "c", "'", " the", " a", "ing", "er"))

emission = st.tuples(st.integers(1, 9), st.floats(0.01, 1.0))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([CHARS, PIECES]), st.lists(emission, max_size=60),
       st.lists(st.integers(0, 8), max_size=20), st.booleans())
def test_words_built_incrementally_equal_the_whole_rebuild(tok, items, steps, restart) -> None:
    """Emissions arrive a few at a time (steps of 0..8, zero: asked twice with nothing new);
    after each, the incremental result equals hypothesis() of everything so far; after the
    list starts again (a new utterance), it follows the new list."""
    ems = [(min(k, tok.vocab_size - 1), frame, p) for frame, (k, p) in enumerate(items)]
    words = Words(tok, 0.04)
    got: list = []
    for n in [*steps, len(ems)]:
        got.extend(ems[len(got) : len(got) + n])
        assert words(got) == hypothesis(got, tok, 0.04)
    if restart and ems:
        again = ems[: len(ems) // 2]
        assert words(again) == hypothesis(again, tok, 0.04)


def test_shift_words_moves_times_and_keeps_the_rest() -> None:
    ws = [Word("hi", 0.1, 0.3, 0.9), Word("there", 0.35, 0.8, 0.5)]
    assert shift_words(ws, 1.25) == [Word("hi", 1.35, 1.55, 0.9), Word("there", 1.6, 2.05, 0.5)]
