"""Streaming CTC greedy decoding with word timestamps and confidences.

Interface shared by all decoders: `reset()`, `update(log_probs (T', V))` per chunk,
`result()` for the partial, `finalize()` for the final. Each emitted token keeps its frame and
max probability; `hypothesis()` turns them into timed words with confidences.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from models.decoding.hypothesis import Emission, Hypothesis, Words
from models.tokenizer import CharTokenizer


class CtcGreedyDecoder:
    def __init__(self, tokenizer: CharTokenizer, *, frame_seconds: float):
        self.tok = tokenizer
        self.frame_seconds = frame_seconds
        self.words = Words(tokenizer, frame_seconds)  # the result, built as tokens come
        self.reset()

    def reset(self) -> None:
        self.words.reset()
        self.frames = 0
        self.prev = self.tok.blank_id
        self.tokens: list[Emission] = []

    def update(self, log_probs: torch.Tensor) -> None:
        """log_probs (T', V) for the next T' frames of this stream."""
        best_lp, best = log_probs.max(dim=-1)
        self.update_best(best.tolist(), best_lp.tolist())

    def update_best(self, best: list[int], best_lp: list[float]) -> None:
        """The next frames' argmax ids and their log-probs (what `update` computes)."""
        for t, (k, lp) in enumerate(zip(best, best_lp, strict=True)):
            if k != self.tok.blank_id and k != self.prev:
                self.tokens.append((k, self.frames + t, math.exp(lp)))
            self.prev = k
        self.frames += len(best)

    def result(self) -> Hypothesis:
        return self.words(self.tokens)

    def finalize(self) -> Hypothesis:
        return self.result()


def advance_batch(decoders: list[CtcGreedyDecoder], log_probs: np.ndarray) -> None:
    """Streaming greedy CTC for a batch of streams with one argmax: log_probs (B, T', V), row
    b the next T' frames of decoders[b] (the dispatcher's worker calls this after each step).
    The first maximum wins a tie, as in `update`."""
    best = log_probs.argmax(axis=-1)  # (B, T')
    best_lp = np.take_along_axis(log_probs, best[..., None], axis=-1)[..., 0]  # (B, T')
    for dec, ids, lps in zip(decoders, best.tolist(), best_lp.tolist(), strict=True):
        dec.update_best(ids, lps)


def greedy_batch(log_probs: torch.Tensor, lengths: torch.Tensor, tok: CharTokenizer) -> list[str]:
    """Offline greedy text for a batch: log_probs (B, T', V), lengths (B,)."""
    best = log_probs.argmax(dim=-1)  # (B, T')
    out = []
    for b in range(best.shape[0]):
        seq = torch.unique_consecutive(best[b, : int(lengths[b])]).tolist()
        out.append(" ".join(tok.decode(seq).split()))
    return out
