"""Decoder results shared by every decoder: words with timing and confidence.

A decoder reduces its best path to emitted tokens `(token_id, frame, prob)`; `hypothesis()`
turns them into words by their spelling (characters, grams or subword units). A word starts at
its first token's frame and ends after its last; its confidence is the mean of its tokens'
probabilities; the utterance confidence is the mean over words.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from models.tokenizer import CharTokenizer

Emission = tuple[int, int, float]  # (token id, output frame, probability)


@dataclass(frozen=True)
class Word:
    word: str
    start: float  # seconds
    end: float
    confidence: float


@dataclass
class Hypothesis:
    text: str
    words: list[Word] = field(default_factory=list)
    confidence: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {"text": self.text, "confidence": self.confidence,
                "words": [w.__dict__ for w in self.words]}


def shift_words(words: Iterable[Word], seconds: float) -> list[Word]:
    """The words moved `seconds` later (an utterance's times -> its stream's or file's)."""
    return [replace(w, start=round(w.start + seconds, 3), end=round(w.end + seconds, 3))
            for w in words]


def hypothesis(emissions: Iterable[Emission], tok: CharTokenizer, frame_seconds: float) -> Hypothesis:
    """Tokens -> timed words. A space starts a new word, alone (characters) or leading a
    subword unit (" the"); a unit with no space (a letter, a gram, "ing") goes on the word."""
    words: list[Word] = []
    current: list[Emission] = []
    text: list[str] = []

    def flush() -> None:
        if current and "".join(text):
            conf = sum(p for _, _, p in current) / len(current)
            start = current[0][1] * frame_seconds
            end = (current[-1][1] + 1) * frame_seconds
            words.append(Word("".join(text), round(start, 3), round(end, 3), round(conf, 4)))
        current.clear()
        text.clear()

    for item in emissions:
        piece = tok.spell(item[0])
        if piece.startswith(" "):
            flush()
            piece = piece.lstrip(" ")
        if piece:
            current.append(item)
            text.append(piece)
    flush()
    conf = sum(w.confidence for w in words) / len(words) if words else 0.0
    return Hypothesis(" ".join(w.word for w in words), words, round(conf, 4))
