"""One stream through the whole model path, sans I/O: samples in, hypotheses out.

samples -> StreamingFbank -> `Chunker` (feature buffer -> step inputs of chunk + lookahead
frames) -> model step -> decoder. At the end of a stream the Chunker pads with the normaliser's
zero frame, as `forward` does, so a stream fed in any pieces gives the offline transcript. The
server's dispatcher runs the step for many streams at once and reuses the Chunker;
`StreamingTranscriber` is the single-stream reference and the offline/CLI path.
"""

from __future__ import annotations

import numpy as np
import torch

from models.bundle import Bundle
from models.decoding import Decoder, Hypothesis, Word, bundle_decoder, shift_words
from models.features import Fbank, StreamingFbank


class Chunker:
    """Samples -> model step inputs (chunk + lookahead, F); `finish()` pads the tail.

    `deferred` (log-mel features only: PCEN carries state from frame to frame): `accept`
    gives, for each chunk, the span of samples (int16 scale) its chunk + lookahead frames
    cover, (chunk + lookahead - 1) * hop + window samples, instead of features:
    `Fbank.features(Fbank.frame(span))` is the same chunk. The server computes those for every
    stream of a batch at once in its dispatcher thread (off the event loop: one FFT and mel
    product for all of them), so its event loop only appends samples. `finish` gives features
    either way."""

    def __init__(self, bundle: Bundle, *, chunk_frames: int | None = None, fbank: Fbank | None = None,
                 deferred: bool = False):
        model = bundle.model
        self.chunk = chunk_frames or bundle.decoding.chunk_frames
        if self.chunk <= 0 or self.chunk % model.subsampling:
            raise ValueError(f"chunk_frames must be a positive multiple of "
                             f"{model.subsampling}, got {self.chunk}")
        self.lookahead = model.lookahead_frames
        self.subsampling = model.subsampling
        self.pad_frame = model.encoder.pad_frame.detach().cpu()  # (F,)
        self.fbank = StreamingFbank(fbank=fbank or Fbank(bundle.features))
        self.num_bins = bundle.features.num_mel_bins
        self.deferred = deferred and bundle.features.compression == "log"
        cfg = self.fbank.cfg
        self.span = (self.chunk + self.lookahead - 1) * cfg.hop_samples + cfg.window_samples
        self.reset()

    def reset(self) -> None:
        self.fbank.reset()
        self.pending = torch.zeros(0, self.num_bins)  # (P, F) features not yet stepped past
        # deferred: the samples of the frames not yet stepped past (int16 scale)
        self.samples = np.zeros(0, dtype=self.fbank.np_dtype)
        self.finished = False

    def accept(self, samples: np.ndarray) -> list[torch.Tensor]:
        """Samples (S,) in [-1, 1] -> the chunks now complete: features (chunk + lookahead,
        F), or (deferred) their sample spans (span,)."""
        if self.finished:
            raise RuntimeError("stream already finalized; call reset() to start another")
        if self.deferred:
            return self._spans(samples)
        self.pending = torch.cat([self.pending, self.fbank.accept(samples)])
        out = []
        while self.pending.shape[0] >= self.chunk + self.lookahead:
            out.append(self.pending[: self.chunk + self.lookahead])
            self.pending = self.pending[self.chunk :]
        return out

    def _spans(self, samples: np.ndarray) -> list[torch.Tensor]:
        dtype = self.fbank.np_dtype
        scaled = np.asarray(samples).astype(dtype) * dtype.type(self.fbank.cfg.input_scale)
        buf = np.concatenate([self.samples, scaled])  # a new array: the spans may view it
        step = self.chunk * self.fbank.cfg.hop_samples
        out, start = [], 0
        while buf.shape[0] - start >= self.span:
            out.append(torch.from_numpy(buf[start : start + self.span]))
            start += step
        self.samples = buf[start:]
        return out

    def finish(self) -> list[torch.Tensor]:
        """The remaining frames, padded to a multiple of the subsampling plus the lookahead."""
        if self.finished:
            return []
        self.finished = True
        if self.deferred:
            fb = self.fbank.fbank
            self.pending = fb.features(fb.frame(torch.from_numpy(self.samples)))
            self.samples = self.samples[:0]
        rest = self.pending.shape[0]
        t_pad = -(-rest // self.subsampling) * self.subsampling
        x = torch.cat([self.pending, self.pad_frame.expand(t_pad - rest + self.lookahead, -1)])
        self.pending = self.pending[:0]
        return [x[s : min(s + self.chunk, t_pad) + self.lookahead] for s in range(0, t_pad, self.chunk)]


class StreamingTranscriber:
    def __init__(self, bundle: Bundle, *, chunk_frames: int | None = None,
                 decoder: str | None = None, beam_size: int | None = None):
        self.bundle = bundle
        self.model = bundle.model
        self.chunker = Chunker(bundle, chunk_frames=chunk_frames)
        self.decoder: Decoder = bundle_decoder(bundle, decoder, beam_size=beam_size)
        self.reset()

    def reset(self) -> None:
        self.chunker.reset()
        self.decoder.reset()
        self.state = self.model.init_state(1)

    @torch.no_grad()
    def _run(self, frames: torch.Tensor) -> None:
        out, self.state = self.model.step(frames[None], self.state)
        self.decoder.update(out[0])

    def accept_waveform(self, samples: np.ndarray) -> Hypothesis:
        """Float samples at the bundle's sample rate; returns the current partial."""
        for frames in self.chunker.accept(samples):
            self._run(frames)
        return self.decoder.result()

    def finalize(self) -> Hypothesis:
        """The final; a beam decoder's n-best is rescored with the bundle's neural LM when it
        has one (as the server's sessions do)."""
        for frames in self.chunker.finish():
            self._run(frames)
        if self.bundle.rescorer is not None:
            return self.bundle.rescorer.choose(self.decoder)
        return self.decoder.finalize()


def transcribe(bundle: Bundle, samples: np.ndarray, *, decoder: str | None = None) -> Hypothesis:
    """Offline transcription: the same path with the whole utterance as one piece."""
    t = StreamingTranscriber(bundle, decoder=decoder)
    t.accept_waveform(samples)
    return t.finalize()


def transcribe_speech(bundle: Bundle, samples: np.ndarray, segments: list[tuple[float, float]], *,
                      decoder: str | None = None) -> Hypothesis:
    """Offline transcription of the speech `segments` (start s, end s; e.g. from the VAD's
    models.vad.speech_segments) only: each from a fresh model state, word times in the
    file's seconds, texts joined; confidence the mean over all words."""
    rate = bundle.features.sample_rate
    words: list[Word] = []
    texts: list[str] = []
    for start, end in segments:
        hyp = transcribe(bundle, samples[int(start * rate) : int(end * rate)], decoder=decoder)
        if hyp.text:
            texts.append(hyp.text)
            words += shift_words(hyp.words, start)
    conf = float(np.mean([w.confidence for w in words])) if words else 0.0
    return Hypothesis(" ".join(texts), words, conf)
