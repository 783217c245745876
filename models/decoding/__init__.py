"""Decoders over acoustic model outputs: CTC greedy and CTC prefix beam search.

Every decoder is a per-stream object with `reset()`, `update(log_probs (T', V))`, `result()`
(partial) and `finalize()` (final), returning a `Hypothesis`.
"""

from __future__ import annotations

from typing import Protocol

import torch

from models.decoding.ctc_beam import BeamConfig, CtcPrefixBeamDecoder
from models.decoding.ctc_greedy import CtcGreedyDecoder
from models.decoding.hotwords import Hotwords
from models.decoding.hypothesis import Hypothesis, Word
from models.decoding.lm_fusion import LmConfig, LmFusion
from models.tokenizer import CharTokenizer

DECODERS = ("greedy", "beam")


class Decoder(Protocol):
    def reset(self) -> None: ...
    def update(self, log_probs: torch.Tensor) -> None: ...
    def result(self) -> Hypothesis: ...
    def finalize(self) -> Hypothesis: ...


def make_decoder(name: str, tokenizer: CharTokenizer, *, frame_seconds: float,
                 beam_size: int = 8, hotwords: list[tuple[str, float]] | None = None,
                 lm: LmFusion | None = None) -> Decoder:
    """`hotwords` [(phrase, boost)] bias the beam decoder (and so select it when given);
    `lm` (a bundle's word LM) is fused by the beam decoder only."""
    if hotwords:
        name = "beam"
    if name == "greedy":
        return CtcGreedyDecoder(tokenizer, frame_seconds=frame_seconds)
    if name == "beam":
        return CtcPrefixBeamDecoder(tokenizer, frame_seconds=frame_seconds,
                                    config=BeamConfig(beam_size=beam_size),
                                    hotwords=Hotwords(hotwords, tokenizer) if hotwords else None,
                                    lm=lm)
    raise ValueError(f"decoder must be one of {DECODERS}, got {name!r}")


__all__ = ["DECODERS", "BeamConfig", "CtcGreedyDecoder", "CtcPrefixBeamDecoder", "Decoder",
           "Hotwords", "Hypothesis", "LmConfig", "LmFusion", "Word", "make_decoder"]
