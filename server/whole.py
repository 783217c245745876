"""Whole-audio recognition over the streaming path (gRPC Recognize / BatchRecognize, Riva's
Recognize, OpenAI transcriptions): the finals, one per utterance, in the audio's seconds.

Without the VAD the audio goes through one stream, as a client would stream it. With
`endpoint.vad` silence is skipped: the VAD's speech segments (models.vad.speech_segments, run
in a worker thread so the live streams' event loop is not held up) each go through a fresh
stream, one after another (one admission slot per request), and their finals are moved to the
audio's seconds and numbered in order. A stream per segment also means a segment never starts
with the decoder state of the one before, as with the offline `chorus transcribe --vad`.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np

from models.decoding import shift_words
from server.app import App
from server.audio_in import BYTES_PER_SAMPLE, AudioFormat, StreamDecoder
from server.session import Event, Final, SessionConfig


def frames_of(data: bytes, fmt: AudioFormat, max_bytes: int) -> list[bytes]:
    """Cut a whole audio into frames under the frame limit, on sample boundaries when raw."""
    width = 1 if fmt.encoding == "wav" else BYTES_PER_SAMPLE[fmt.encoding] * fmt.channels
    size = max(width, (max_bytes // width) * width)
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


async def _one_stream(app: App, config: SessionConfig, audio: bytes) -> list[Final]:
    stream = app.open(config)
    try:
        events: list[Event] = []
        for frame in frames_of(audio, config.format, app.cfg.limits.max_frame_bytes):
            events += await stream.feed(frame)
        events += await stream.finish()
        return [e for e in events if isinstance(e, Final)]
    finally:
        stream.close()


def _vad_on(app: App, config: SessionConfig) -> bool:
    return bool(app.cfg.endpoint.vad and config.continuous and config.endpoint.enabled)


async def recognize_samples(app: App, config: SessionConfig, samples: np.ndarray) -> list[Final]:
    """Float samples at the bundle's rate (any `config.format`: it is replaced by float PCM)."""
    rate = app.bundle.features.sample_rate
    cfg = replace(config, format=AudioFormat("pcm_f32le", rate, 1))
    samples = np.clip(np.asarray(samples, np.float32), -1.0, 1.0)
    if not _vad_on(app, config):
        return await _one_stream(app, cfg, samples.astype("<f4").tobytes())
    from models.vad import speech_segments

    finals: list[Final] = []
    for start, end in await asyncio.to_thread(speech_segments, samples, rate):
        piece = samples[int(start * rate) : int(end * rate)].astype("<f4").tobytes()
        for f in await _one_stream(app, cfg, piece):
            finals.append(replace(f, words=shift_words(f.words, start),
                                  start=round(f.start + start, 3), end=round(f.end + start, 3),
                                  audio_processed=round(start + f.audio_processed, 3),
                                  seq=len(finals)))
    return finals


async def recognize_whole(app: App, config: SessionConfig, audio: bytes) -> list[Final]:
    """One whole audio in `config.format` (bad bytes: AudioError, as on a stream)."""
    if not _vad_on(app, config):
        return await _one_stream(app, config, audio)
    config.validate()  # the format's fields, before decoding by them

    def decode() -> np.ndarray:
        dec = StreamDecoder(config.format, target_rate=app.bundle.features.sample_rate)
        return np.concatenate([dec.feed(audio), dec.flush()])

    return await recognize_samples(app, config, await asyncio.to_thread(decode))
