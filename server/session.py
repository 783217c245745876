"""A recognition session, sans I/O (DESIGN 3.5): bytes and control in, events out.

Every protocol adapter (WebSocket, native gRPC, Riva gRPC) drives the same object:

    session = Session(bundle, config)           # validates the config (AudioError on bad fields)
    steps = session.feed(frame_bytes, now)      # -> model inputs to run, in order
    for x in steps:
        events += session.on_output(await dispatcher.step(sid, x))   # Partial / Final events
    steps = session.finish(now)                 # end of audio: the padded tail
    ...; events += session.on_output(...) for each; events += session.close()

The session never touches a socket or the model: the adapter runs the steps (through Batch
Dispatch) and sends the events. Time (`now`, seconds) is passed in, so limits and idle timeouts
are testable without sleeping.

Endpointing (continuous mode) follows the decoder, not the energy: after some text, an
utterance ends when the decoder has emitted nothing for `trailing_silence_ms`; with no text
yet, leading silence longer than `max_leading_silence_ms` resets the utterance; an utterance
longer than `max_utterance_s` is cut. Each ended utterance yields a Final with stream-relative
word times; the decoder restarts for the next one.

With `endpoint.vad` a neural voice-activity detector (models/vad.py) listens beside the decoder:
after text, an utterance ends once the decoder has reached `vad_silence_ms` past where the VAD
heard speech end; never while the VAD heard speech at the decoder's time (a decoder pausing
inside a word does not cut it). Both are judged at the decoder's time, not at the newest audio
fed in, so a client sending faster than real time endpoints the same way. Text in an utterance
where the VAD heard no speech (noise the decoder took for words) falls back to the decoder's
rule above.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from models.audio import AudioError
from models.decoding import Hypothesis, Word, bundle_decoder, shift_words
from models.features import Fbank
from models.streaming import Chunker
from models.vad import StreamingVad, check_rate
from server.audio_in import AudioFormat, StreamDecoder
from server.dispatch import Frames


class SessionError(ValueError):
    """A protocol-level error: `code` is a stable machine-readable name."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class EndpointConfig:
    enabled: bool = True
    trailing_silence_ms: float = 800.0  # after text: this much with no new token ends it
    max_leading_silence_ms: float = 5000.0  # no text yet: restart the utterance window
    max_utterance_s: float = 30.0
    vad: bool = False  # the neural VAD decides where speech ended (module docstring)
    vad_silence_ms: float = 500.0  # with vad: this much silence after speech ends it


@dataclass(frozen=True)
class Limits:
    max_frame_bytes: int = 1 << 20
    max_stream_s: float = 4 * 3600.0
    idle_timeout_s: float = 30.0


@dataclass(frozen=True)
class SessionConfig:
    format: AudioFormat = field(default_factory=AudioFormat)
    interim_results: bool = True
    continuous: bool = True  # endpointing: a Final per utterance; False: one Final at the end
    max_alternatives: int = 1
    decoder: str | None = None  # None: the bundle's default; n-best needs "beam"
    hotwords: tuple[tuple[str, float], ...] = ()  # (phrase, log bonus per char): biases the beam
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    limits: Limits = field(default_factory=Limits)

    def validate(self) -> SessionConfig:
        self.format.validate()
        alts = self.max_alternatives
        if isinstance(alts, bool) or not isinstance(alts, int) or not 1 <= alts <= 10:
            raise AudioError(f"max_alternatives must be an integer 1..10, got {self.max_alternatives!r}")
        if self.decoder not in (None, "greedy", "beam"):
            raise AudioError(f"decoder must be 'greedy' or 'beam', got {self.decoder!r}")
        return self


@dataclass(frozen=True)
class Partial:
    text: str
    stability: float  # fraction of the text (from the start) unlikely to change
    words: list[Word]
    audio_processed: float = 0.0  # stream seconds received when this partial was made
    # server time to make it: its chunk's dispatch queue wait + model step + decoding (set by
    # the Stream that drives the session; the session itself has no clock)
    processing_latency_ms: float = 0.0


@dataclass(frozen=True)
class Final:
    text: str
    words: list[Word]
    confidence: float
    start: float  # stream seconds
    end: float
    alternatives: list[tuple[str, float]]  # (text, log prob) best first; [] for greedy
    audio_processed: float  # stream seconds received so far
    seq: int = 0  # index of this final in the stream (0, 1, ...): what a resuming client counts
    processing_latency_ms: float = 0.0  # as for Partial (the stream's last chunk, for a flush)


Event = Partial | Final


class Session:
    def __init__(self, bundle: Any, config: SessionConfig, *, fbank: Fbank | None = None,
                 now: float = 0.0, deferred_features: bool = False):
        """`deferred_features`: model inputs are the chunks' samples (dispatch.Frames;
        log-mel bundles) for the dispatcher to turn into features batched across streams."""
        self.cfg = config.validate()
        self.bundle = bundle
        self.audio = StreamDecoder(config.format, target_rate=bundle.features.sample_rate)
        self.chunker = Chunker(bundle, fbank=fbank, deferred=deferred_features)
        decoder = config.decoder or ("beam" if config.max_alternatives > 1 else
                                     bundle.decoding.decoder)
        try:
            self.decoder = bundle_decoder(
                bundle, decoder, beam_size=max(bundle.decoding.beam_size, config.max_alternatives),
                hotwords=list(config.hotwords) or None)
        except ValueError as exc:  # bad hotwords
            raise AudioError(str(exc)) from None
        # n-best rescoring of finals with the bundle's neural LM (beam decoders; a greedy one
        # keeps its own final)
        self.rescorer = bundle.rescorer
        self.context: list[str] = []  # words of this stream's earlier finals (TCNLM's topic)
        ep = config.endpoint
        self.vad: StreamingVad | None = None
        if ep.vad and ep.enabled and config.continuous:
            check_rate(bundle.features.sample_rate)
            self.vad = StreamingVad()
        self.frame_s = bundle.frame_seconds
        self.frames_out = 0  # model output frames of the stream so far
        self.utt_start = 0  # output frame where the current utterance began
        self.last_text = ""
        self.last_change = 0  # output frame of the last change of the partial text
        self._shifted: list[tuple[Word, Word]] = []  # _shift's (word, in stream time) pairs
        self.last_activity = now
        self.finals_made = 0
        self.finished = False
        self.closed = False

    # ---- input -------------------------------------------------------------------------------
    @property
    def audio_seconds(self) -> float:
        return self.audio.source_seconds

    def feed(self, data: bytes, now: float) -> list[np.ndarray | Frames]:
        """One frame of audio bytes -> model inputs (chunk + lookahead, F), or the samples
        of those frames (deferred features), to step, in order."""
        if self.finished:
            raise SessionError("audio_after_end", "audio after the end of the stream")
        lim = self.cfg.limits
        if len(data) > lim.max_frame_bytes:
            raise SessionError("frame_too_large", f"audio frame of {len(data)} bytes exceeds "
                                                  f"max_frame_bytes={lim.max_frame_bytes}")
        if self.audio_seconds + self.audio.seconds_in(data) > lim.max_stream_s:
            raise SessionError("stream_too_long", f"stream longer than max_stream_s="
                                                   f"{lim.max_stream_s:g} seconds of audio")
        samples = self.audio.feed(data)  # AudioError on bad bytes; nothing is consumed then
        self.last_activity = now
        if self.vad is not None:
            self.vad.accept(samples)
        return self._inputs(self.chunker.accept(samples))

    def _inputs(self, chunks: list[torch.Tensor]) -> list[np.ndarray | Frames]:
        """Chunker chunks -> model inputs (deferred features: the chunks' samples)."""
        if self.chunker.deferred:
            rows = self.chunker.chunk + self.chunker.lookahead
            return [Frames(c.numpy(), rows) for c in chunks]
        return [c.numpy() for c in chunks]

    def finish(self, now: float) -> list[np.ndarray | Frames]:
        """End of audio: the remaining (padded) model inputs."""
        if self.finished:
            return []
        self.finished = True
        self.last_activity = now
        tail = self.audio.flush()
        if self.vad is not None and tail.size:
            self.vad.accept(tail)
        inputs = self._inputs(self.chunker.accept(tail)) if tail.size else []
        return inputs + [c.numpy() for c in self.chunker.finish()]  # features, padded

    def idle_expired(self, now: float) -> bool:
        return not self.finished and now - self.last_activity > self.cfg.limits.idle_timeout_s

    # ---- model outputs -> events -------------------------------------------------------------
    def on_output(self, log_probs: np.ndarray, decoded: bool = False) -> list[Event]:
        """The model's outputs (T', X) for the next step input, in order; `decoded`: the
        dispatcher already advanced `decoder` with them (the server does, in its worker:
        models.decoding.batch.advance_all)."""
        if not decoded:
            self.decoder.update(torch.from_numpy(np.asarray(log_probs)))
        self.frames_out += int(log_probs.shape[0])
        hyp = self.decoder.result()
        if hyp.text != self.last_text:
            self.last_text, self.last_change = hyp.text, self.frames_out
        events: list[Event] = []
        if self.cfg.continuous and self.cfg.endpoint.enabled and self._endpoint(hyp):
            final = self._final(hyp)
            if final is not None:
                events.append(final)
        elif self.cfg.interim_results and hyp.text:
            events.append(Partial(hyp.text, self._stability(hyp.text), self._shift(hyp.words),
                                  round(self.audio_seconds, 3)))
        return events

    def close(self) -> list[Event]:
        """After the last output of a finished stream: the last Final (if any text is left)."""
        if self.closed:
            return []
        self.closed = True
        final = self._final(self.decoder.finalize(), force=not self.cfg.continuous)
        return [final] if final is not None else []

    # ---- helpers -----------------------------------------------------------------------------
    def _endpoint(self, hyp: Hypothesis) -> bool:
        ep = self.cfg.endpoint
        since_change_ms = (self.frames_out - self.last_change) * self.frame_s * 1000
        length_s = (self.frames_out - self.utt_start) * self.frame_s
        if hyp.text:
            if length_s >= ep.max_utterance_s:
                return True
            if self.vad is not None:
                at = self.frames_out * self.frame_s  # the audio the decoder has seen
                speaking, end = self.vad.speech_at(at)
                if speaking:
                    return False
                if end is not None and end > self.utt_start * self.frame_s:  # speech in this one
                    return (at - end) * 1000 >= ep.vad_silence_ms
            return since_change_ms >= ep.trailing_silence_ms
        if length_s * 1000 >= ep.max_leading_silence_ms:
            self._restart()  # silence only: start the window again, no Final
        return False

    def _final(self, hyp: Hypothesis, force: bool = False) -> Final | None:
        if self.rescorer is not None:
            hyp = self.rescorer.choose(self.decoder, self.context)
            self.context = (self.context + hyp.text.split())[-200:]
        alts: list[tuple[str, float]] = []
        nbest = getattr(self.decoder, "nbest", None)
        if nbest is not None and self.cfg.max_alternatives > 1:
            alts = [(" ".join(t.split()), round(s, 3)) for t, s in nbest()][: self.cfg.max_alternatives]
        start = self.utt_start * self.frame_s
        end = self.frames_out * self.frame_s
        self._restart()
        if not hyp.text and not force:
            return None
        self.finals_made += 1
        return Final(hyp.text, self._shift(hyp.words, start), hyp.confidence, round(start, 3),
                     round(end, 3), alts, round(self.audio_seconds, 3), self.finals_made - 1)

    def _restart(self) -> None:
        self._shifted = []
        self.decoder.reset()
        self.utt_start = self.frames_out
        self.last_text, self.last_change = "", self.frames_out

    def _shift(self, words: list[Word], start: float | None = None) -> list[Word]:
        """The utterance's words in stream time. A partial's words repeat the earlier
        partials' (greedy decoders keep their settled words, the same objects): those come
        from `_shifted`, (word, shifted) pairs of the last call, kept by reference."""
        offset = self.utt_start * self.frame_s if start is None else start
        if start is not None:
            return shift_words(words, offset)
        kept = self._shifted
        n = 0
        while n < min(len(kept), len(words)) and kept[n][0] is words[n]:
            n += 1
        new = shift_words(words[n:], offset)
        self._shifted = kept[:n] + list(zip(words[n:], new, strict=True))
        return [w for _, w in self._shifted]

    @staticmethod
    def _stability(text: str) -> float:
        """Words followed by a space are settled (CTC does not revise them); the last is not."""
        cut = text.rfind(" ")
        return round((cut + 1) / len(text), 3) if cut > 0 else 0.0
