"""Decoders over acoustic model outputs: CTC (and Gram-CTC) greedy and prefix beam search;
RNN-T greedy and time-synchronous beam search.

Every decoder is a per-stream object with `reset()`, `update(outputs (T', X))`, `result()`
(partial) and `finalize()` (final), returning a `Hypothesis`. CTC decoders take log-probs; RNN-T
decoders take the encoder's joiner-space frames and run the bundle's predictor and joiner.
`bundle_decoder(bundle, ...)` picks the right one for a bundle.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from models.decoding.ctc_beam import BeamConfig, CtcPrefixBeamDecoder
from models.decoding.ctc_greedy import CtcGreedyDecoder
from models.decoding.hotwords import Hotwords
from models.decoding.hypothesis import Hypothesis, Word, shift_words
from models.decoding.lm_fusion import LmConfig, LmFusion
from models.decoding.rnnt import RnntBeamDecoder, RnntGreedyDecoder
from models.tokenizer import CharTokenizer

DECODERS = ("greedy", "beam")


class Decoder(Protocol):
    def reset(self) -> None: ...
    def update(self, log_probs: torch.Tensor) -> None: ...
    def result(self) -> Hypothesis: ...
    def finalize(self) -> Hypothesis: ...


class NBestDecoder(Decoder, Protocol):
    """A beam decoder that also lists its hypotheses' token ids (CTC prefix / RNN-T beam)."""

    def nbest_ids(self) -> list[tuple[list[int], float]]: ...


def make_decoder(name: str, tokenizer: CharTokenizer, *, frame_seconds: float,
                 beam_size: int = 8, hotwords: list[tuple[str, float]] | None = None,
                 lm: LmFusion | None = None, transducer: Any = None) -> Decoder:
    """`hotwords` [(phrase, boost)] bias the beam decoder (and so select it when given);
    `lm` (a bundle's word LM) is fused by the beam decoders. `transducer` (an RNN-T bundle's
    TransducerHead) selects the RNN-T decoders."""
    if transducer is not None:
        if hotwords:
            name = "beam"
        if name == "greedy":
            return RnntGreedyDecoder(transducer, tokenizer, frame_seconds=frame_seconds)
        if name == "beam":
            return RnntBeamDecoder(transducer, tokenizer, frame_seconds=frame_seconds,
                                   beam_size=beam_size, lm=lm,
                                   hotwords=Hotwords(hotwords) if hotwords else None)
        raise ValueError(f"decoder must be one of {DECODERS}, got {name!r}")
    if hotwords:
        name = "beam"
    if name == "greedy":
        return CtcGreedyDecoder(tokenizer, frame_seconds=frame_seconds)
    if name == "beam":
        return CtcPrefixBeamDecoder(tokenizer, frame_seconds=frame_seconds,
                                    config=BeamConfig(beam_size=beam_size),
                                    hotwords=Hotwords(hotwords) if hotwords else None,
                                    lm=lm)
    raise ValueError(f"decoder must be one of {DECODERS}, got {name!r}")


def bundle_decoder(bundle: Any, name: str | None = None, *, beam_size: int | None = None,
                   hotwords: list[tuple[str, float]] | None = None, lm: Any = "bundle") -> Decoder:
    """The decoder for a bundle's head, with its defaults (decoder, beam size, LM)."""
    head = bundle.model.head
    return make_decoder(name or bundle.decoding.decoder, bundle.tokenizer,
                        frame_seconds=bundle.frame_seconds,
                        beam_size=beam_size or bundle.decoding.beam_size, hotwords=hotwords,
                        lm=bundle.lm if lm == "bundle" else lm,
                        transducer=head if bundle.model.output_kind == "encoder" else None)


__all__ = ["DECODERS", "BeamConfig", "CtcGreedyDecoder", "CtcPrefixBeamDecoder", "Decoder",
           "Hotwords", "Hypothesis", "LmConfig", "LmFusion", "RnntBeamDecoder", "RnntGreedyDecoder",
           "Word", "shift_words", "bundle_decoder", "make_decoder"]
