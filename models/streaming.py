"""One stream through the whole model path, sans I/O: samples in, hypotheses out.

samples -> StreamingFbank -> feature buffer -> model.step on chunk (+ lookahead) frames ->
decoder. `finalize()` pads with the normaliser's zero frame, as `forward` does, so a stream fed
in any pieces gives the offline transcript. The server's dispatcher batches `step` across
streams; this class is the single-stream reference and the offline/CLI path.
"""

from __future__ import annotations

import numpy as np
import torch

from models.bundle import Bundle
from models.decoding import Hypothesis, make_decoder
from models.features import Fbank, StreamingFbank


class StreamingTranscriber:
    def __init__(self, bundle: Bundle, *, chunk_frames: int | None = None,
                 decoder: str | None = None, beam_size: int | None = None):
        self.bundle = bundle
        self.model = bundle.model
        self.chunk = chunk_frames or bundle.decoding.chunk_frames
        if self.chunk <= 0 or self.chunk % self.model.subsampling:
            raise ValueError(f"chunk_frames must be a positive multiple of "
                             f"{self.model.subsampling}, got {self.chunk}")
        self.fbank = StreamingFbank(fbank=Fbank(bundle.features))
        self.decoder = make_decoder(decoder or bundle.decoding.decoder, bundle.tokenizer,
                                    frame_seconds=bundle.frame_seconds,
                                    beam_size=beam_size or bundle.decoding.beam_size)
        self.reset()

    def reset(self) -> None:
        self.fbank.reset()
        self.decoder.reset()
        self.state = self.model.init_state(1)
        self.pending = torch.zeros(0, self.bundle.features.num_mel_bins)  # (P, F) features
        self.finished = False

    @torch.no_grad()
    def _run(self, frames: torch.Tensor) -> None:
        out, self.state = self.model.step(frames[None], self.state)
        self.decoder.update(out[0])

    def accept_waveform(self, samples: np.ndarray) -> Hypothesis:
        """Float samples at the bundle's sample rate; returns the current partial."""
        if self.finished:
            raise RuntimeError("stream already finalized; call reset() to start another")
        self.pending = torch.cat([self.pending, self.fbank.accept(samples)])
        la = self.model.lookahead_frames
        while self.pending.shape[0] >= self.chunk + la:
            self._run(self.pending[: self.chunk + la])
            self.pending = self.pending[self.chunk :]
        return self.decoder.result()

    def finalize(self) -> Hypothesis:
        if not self.finished:
            la = self.model.lookahead_frames
            rest = self.pending.shape[0]
            t_pad = -(-rest // self.model.subsampling) * self.model.subsampling
            pad = self.model.encoder.pad_frame.expand(t_pad - rest + la, -1)
            x = torch.cat([self.pending, pad])
            for start in range(0, t_pad, self.chunk):
                end = min(start + self.chunk, t_pad)
                self._run(x[start : end + la])
            self.pending = self.pending[:0]
            self.finished = True
        return self.decoder.finalize()


def transcribe(bundle: Bundle, samples: np.ndarray, *, decoder: str | None = None) -> Hypothesis:
    """Offline transcription: the same path with the whole utterance as one piece."""
    t = StreamingTranscriber(bundle, decoder=decoder)
    t.accept_waveform(samples)
    return t.finalize()
