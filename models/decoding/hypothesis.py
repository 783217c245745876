"""Decoder results shared by every decoder: words with timing and confidence.

A decoder reduces its best path to emitted tokens `(token_id, frame, prob)`; `hypothesis()`
turns them into words by their spelling (characters, grams or subword units). A word starts at
its first token's frame and ends after its last; its confidence is the mean of its tokens'
probabilities; the utterance confidence is the mean over words.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

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
    """The words moved `seconds` later (an utterance's times -> its stream's or file's).
    (Built directly: dataclasses.replace costs ~10x more, and a server does this for every
    word of every partial.)"""
    return [Word(w.word, round(w.start + seconds, 3), round(w.end + seconds, 3), w.confidence)
            for w in words]


class Words:
    """`hypothesis()` of a growing list of emissions (greedy decoders only append), in time
    linear in the new emissions: the words already closed by a later word's space are kept,
    only the open last word is rebuilt. A server asks every stream for its partial after
    every chunk; rebuilding the whole utterance each time cost ~1 ms per chunk at 30 words."""

    def __init__(self, tok: CharTokenizer, frame_seconds: float):
        self.tok, self.frame_seconds = tok, frame_seconds
        self.reset()

    def reset(self) -> None:
        self.seen = 0  # emissions consumed
        self.closed: list[Word] = []
        self.text = ""  # the closed words' text
        self.conf_sum = 0.0  # the closed words' confidences, summed
        self.current: list[Emission] = []  # the open word's tokens
        self.pieces: list[str] = []

    def _word(self) -> Word | None:
        spelled = "".join(self.pieces)
        if not (self.current and spelled):
            return None
        conf = sum(p for _, _, p in self.current) / len(self.current)
        return Word(spelled, round(self.current[0][1] * self.frame_seconds, 3),
                    round((self.current[-1][1] + 1) * self.frame_seconds, 3), round(conf, 4))

    def __call__(self, emissions: list[Emission]) -> Hypothesis:
        if len(emissions) < self.seen:  # another utterance: start again
            self.reset()
        for item in emissions[self.seen:]:
            piece = self.tok.spell(item[0])
            if piece.startswith(" "):
                if (w := self._word()) is not None:
                    self.closed.append(w)
                    self.text = f"{self.text} {w.word}" if self.text else w.word
                    self.conf_sum += w.confidence
                self.current, self.pieces = [], []
                piece = piece.lstrip(" ")
            if piece:
                self.current.append(item)
                self.pieces.append(piece)
        self.seen = len(emissions)
        last = self._word()
        words = self.closed + ([last] if last is not None else [])
        text = self.text if last is None else (f"{self.text} {last.word}" if self.text
                                               else last.word)
        total = self.conf_sum + (last.confidence if last is not None else 0.0)
        return Hypothesis(text, words, round(total / len(words), 4) if words else 0.0)


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
