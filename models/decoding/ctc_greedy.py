"""Streaming CTC greedy decoding with word timestamps and confidences.

Interface shared by all decoders: `reset()`, `update(log_probs (T', V))` per chunk,
`result()` for the partial, `finalize()` for the final. The alignment gives word timing: a word
starts at its first emitted token's frame and ends after its last; confidence is the mean of the
per-token max probabilities (per word and per utterance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from models.tokenizer import CharTokenizer


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


class CtcGreedyDecoder:
    def __init__(self, tokenizer: CharTokenizer, *, frame_seconds: float):
        self.tok = tokenizer
        self.frame_seconds = frame_seconds
        self.space_id = tokenizer.symbols.index(" ")
        self.reset()

    def reset(self) -> None:
        self.frames = 0
        self.prev = self.tok.blank_id
        self.tokens: list[tuple[int, int, float]] = []  # (id, frame, prob)

    def update(self, log_probs: torch.Tensor) -> None:
        """log_probs (T', V) for the next T' frames of this stream."""
        best_lp, best = log_probs.max(dim=-1)
        for t, (k, lp) in enumerate(zip(best.tolist(), best_lp.tolist(), strict=True)):
            if k != self.tok.blank_id and k != self.prev:
                self.tokens.append((k, self.frames + t, math.exp(lp)))
            self.prev = k
        self.frames += int(log_probs.shape[0])

    def result(self) -> Hypothesis:
        words: list[Word] = []
        current: list[tuple[int, int, float]] = []

        def flush() -> None:
            if current:
                text = self.tok.decode([k for k, _, _ in current])
                conf = sum(p for _, _, p in current) / len(current)
                start = current[0][1] * self.frame_seconds
                end = (current[-1][1] + 1) * self.frame_seconds
                words.append(Word(text, round(start, 3), round(end, 3), round(conf, 4)))
                current.clear()

        for item in self.tokens:
            if item[0] == self.space_id:
                flush()
            else:
                current.append(item)
        flush()
        conf = sum(w.confidence for w in words) / len(words) if words else 0.0
        return Hypothesis(" ".join(w.word for w in words), words, round(conf, 4))

    def finalize(self) -> Hypothesis:
        return self.result()


def greedy_batch(log_probs: torch.Tensor, lengths: torch.Tensor, tok: CharTokenizer) -> list[str]:
    """Offline greedy text for a batch: log_probs (B, T', V), lengths (B,)."""
    best = log_probs.argmax(dim=-1)  # (B, T')
    out = []
    for b in range(best.shape[0]):
        seq = torch.unique_consecutive(best[b, : int(lengths[b])]).tolist()
        out.append(" ".join(tok.decode(seq).split()))
    return out
