"""The sans-I/O session: same transcript as the single-stream path; limits and errors."""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import replace

import numpy as np
import pytest

from models.audio import AudioError, load_audio
from models.backends import make_backend
from models.bundle import load
from models.streaming import StreamingTranscriber
from server.audio_in import AudioFormat
from server.dispatch import Dispatcher
from server.session import EndpointConfig, Final, Limits, Partial, Session, SessionConfig, SessionError
from tests.models.test_cli import tiny_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load(tiny_bundle(tmp_path_factory.mktemp("b") / "tiny"))


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> tuple[bytes, np.ndarray]:
    wav = tmp_path_factory.mktemp("w") / "a.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav),
                    "turn on the lights in the kitchen please"], check=True)
    return wav.read_bytes(), load_audio(wav, sample_rate=16_000)


def drive(bundle, session: Session, frames: list[bytes]) -> list:
    """What a protocol adapter does: feed frames, run the steps through Batch Dispatch."""

    async def main() -> list:
        events: list = []
        async with Dispatcher(make_backend("torch", bundle)) as disp:
            sid = disp.open_stream()
            for i, f in enumerate(frames):
                for x in session.feed(f, now=float(i)):
                    events += session.on_output(await disp.step(sid, x))
            for x in session.finish(now=float(len(frames))):
                events += session.on_output(await disp.step(sid, x))
            return events + session.close()

    return asyncio.run(main())


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_wav_stream_gives_the_offline_transcript(bundle, speech) -> None:
    wav, audio = speech
    offline = StreamingTranscriber(bundle)
    offline.accept_waveform(audio)
    want = offline.finalize()
    cfg = SessionConfig(format=AudioFormat("wav", 0), continuous=False)
    events = drive(bundle, Session(bundle, cfg), split(wav, 3333))
    finals = [e for e in events if isinstance(e, Final)]
    assert len(finals) == 1 and finals[0].text == want.text
    assert finals[0].words == want.words
    assert finals[0].audio_processed == pytest.approx(audio.size / 16000, abs=0.01)
    partials = [e for e in events if isinstance(e, Partial)]
    assert all(0.0 <= p.stability <= 1.0 for p in partials)


def test_pcm16_at_8khz_is_resampled(bundle, speech) -> None:
    import soxr

    _, audio = speech
    pcm8 = (soxr.resample(audio, 16000, 8000) * 32767).astype("<i2").tobytes()
    cfg = SessionConfig(format=AudioFormat("pcm_s16le", 8000), continuous=False)
    events = drive(bundle, Session(bundle, cfg), split(pcm8, 1600))
    assert isinstance(events[-1], Final) and events[-1].end > 2.0


def test_limits_and_errors_are_specific(bundle) -> None:
    cfg = SessionConfig(limits=Limits(max_frame_bytes=1000, max_stream_s=0.5, idle_timeout_s=5))
    s = Session(bundle, cfg, now=0.0)
    with pytest.raises(SessionError, match="1002 bytes exceeds max_frame_bytes=1000") as e:
        s.feed(b"\x00" * 1002, now=1.0)
    assert e.value.code == "frame_too_large"
    with pytest.raises(AudioError, match="got a frame of 999 bytes"):
        s.feed(b"\x00" * 999, now=1.0)
    s.feed(b"\x00" * 1000, now=1.0)  # earlier errors lost nothing: the stream goes on
    assert not s.idle_expired(5.9) and s.idle_expired(6.1)
    for _ in range(15):  # 16 x 500 samples = 0.5 s exactly
        s.feed(b"\x00" * 1000, now=2.0)
    with pytest.raises(SessionError, match="max_stream_s=0.5") as e:
        s.feed(b"\x00" * 1000, now=2.0)
    assert e.value.code == "stream_too_long" and s.audio_seconds == 0.5
    s.finish(now=3.0)
    with pytest.raises(SessionError, match="audio after the end") as e:
        s.feed(b"\x00\x00", now=3.0)
    for bad, msg in [(SessionConfig(max_alternatives=0), "max_alternatives must be"),
                     (SessionConfig(format=AudioFormat("pcm_s16le", 0)), "sample_rate must be"),
                     (SessionConfig(decoder="viterbi"), "decoder must be")]:
        with pytest.raises(AudioError, match=msg):
            Session(bundle, bad)


def test_endpointing_splits_utterances_with_the_shipped_model(tmp_path) -> None:
    """Continuous mode: speech, 1.5 s of silence, speech -> two finals at the right times."""
    shipped = load()
    parts = []
    for i, text in enumerate(["call mom", "set a timer for ten minutes"]):
        wav = tmp_path / f"{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), text], check=True)
        parts.append(load_audio(wav, sample_rate=16_000))
    gap = np.zeros(24_000, np.float32)
    audio = np.concatenate([parts[0], gap, parts[1]])
    pcm = (audio * 32767).astype("<i2").tobytes()
    events = drive(shipped, Session(shipped, SessionConfig()), split(pcm, 3200))
    finals = [e for e in events if isinstance(e, Final)]
    assert len(finals) == 2, [(f.text, f.start, f.end) for f in finals]
    first_end = parts[0].size / 16000
    assert finals[0].words[-1].end <= first_end + 0.3
    assert finals[1].words[0].start >= first_end + 1.2
    assert finals[1].audio_processed == pytest.approx(audio.size / 16000, abs=0.01)


@pytest.fixture(scope="module")
def two_commands(tmp_path_factory) -> tuple[np.ndarray, float]:
    """'call mom', 0.8 s of silence, 'set a timer' + a 0.45 s pause + 'for ten minutes', 1.5 s
    of silence (each piece trimmed to its voiced extent) -> (audio, where 'call mom' ends, s)."""
    tmp = tmp_path_factory.mktemp("vad")
    parts = []
    for i, text in enumerate(["call mom", "set a timer", "for ten minutes"]):
        wav = tmp / f"{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), text], check=True)
        x = load_audio(wav, sample_rate=16_000)
        voiced = np.flatnonzero(np.abs(x) > 0.01)
        parts.append(x[voiced[0] : voiced[-1] + 1])
    lead, gap, pause, tail = (np.zeros(int(s * 16_000), np.float32) for s in (0.5, 0.8, 0.45, 1.5))
    audio = np.concatenate([lead, parts[0], gap, parts[1], pause, parts[2], tail])
    return audio, 0.5 + parts[0].size / 16_000


def _pcm(audio: np.ndarray) -> bytes:
    return (audio * 32767).astype("<i2").tobytes()


def test_vad_endpointing_ends_after_the_speech_and_not_at_a_short_pause(two_commands) -> None:
    """trailing_silence_ms=200 alone also cuts at the 0.45 s pause inside the second command;
    with the VAD on (vad_silence_ms=600) the same setting gives exactly the two commands, the
    first cut at the first model step (320 ms) once the decoder is 600 ms past where the VAD
    heard 'call mom' end."""
    shipped = load()
    audio, first_end = two_commands
    frames = split(_pcm(audio), 3200)
    eager = EndpointConfig(trailing_silence_ms=200)
    decoder_only = [e for e in drive(shipped, Session(shipped, SessionConfig(endpoint=eager)),
                                     frames) if isinstance(e, Final)]
    assert len(decoder_only) == 3, [f.text for f in decoder_only]
    with_vad = replace(eager, vad=True, vad_silence_ms=600)
    finals = [e for e in drive(shipped, Session(shipped, SessionConfig(endpoint=with_vad)), frames)
              if isinstance(e, Final)]
    assert len(finals) == 2, [(f.text, f.start, f.end) for f in finals]
    assert "mom" in finals[0].text, finals[0].text
    assert "timer" in finals[1].text and "minutes" in finals[1].text, finals[1].text
    assert first_end + 0.5 <= finals[0].end <= first_end + 1.05, (finals[0].end, first_end)
    assert finals[0].words[-1].end <= first_end + 0.3
    assert finals[1].start == finals[0].end


def test_vad_endpointing_is_judged_at_the_decoders_time_not_the_newest_audio(two_commands) -> None:
    """A client sending the whole file in one frame (far faster than real time) gets the same
    finals as one sending 100 ms frames: the VAD has heard the second command before the
    decoder reaches the pause, and must not veto the cut there."""
    shipped = load()
    audio, _ = two_commands
    cfg = SessionConfig(endpoint=EndpointConfig(vad=True, vad_silence_ms=600))
    paced = drive(shipped, Session(shipped, cfg), split(_pcm(audio), 3200))
    burst = drive(shipped, Session(shipped, cfg), [_pcm(audio)])
    key = [(f.text, f.start, f.end) for f in paced if isinstance(f, Final)]
    assert len(key) == 2
    assert [(f.text, f.start, f.end) for f in burst if isinstance(f, Final)] == key


def test_a_bundles_neural_lm_rescores_finals_alike_in_sessions_and_offline(tmp_path, speech) -> None:
    """`chorus lm attach-rescorer` puts a neural LM in a copy of the shipped bundle; the
    session's beam final (through Batch Dispatch) equals the offline transcriber's, and both
    are the n-best member maximising decoder score + weight x ln p_LM."""
    import shutil
    import sys
    from pathlib import Path

    from training.lm.neural import NeuralTrainConfig, train

    root = Path(__file__).parents[2]
    shutil.copytree(root / "models/pretrained/default", tmp_path / "b")
    text = [([], "turn on the light in the kitchen please".split())] * 30
    train(NeuralTrainConfig(embed=16, hidden=16, max_steps=60, min_count=1), text, None,
          tmp_path / "lm", progress=False)
    subprocess.run([sys.executable, "-m", "clients.cli", "lm", "attach-rescorer", "--bundle",
                    str(tmp_path / "b"), "--lm", str(tmp_path / "lm"), "--weight", "3"],
                   cwd=root, check=True, capture_output=True, timeout=120)
    b = load(tmp_path / "b")
    assert b.rescorer is not None and b.rescorer.weight == 3.0
    wav, audio = speech
    offline = StreamingTranscriber(b, decoder="beam")
    offline.accept_waveform(audio)
    want = offline.finalize()
    ranked = offline.decoder.nbest_hypotheses()[:8]
    lps = b.rescorer.lm.sentence_logprobs([h.text.split() for h, _ in ranked])
    best = max(range(len(ranked)), key=lambda i: ranked[i][1] + 3.0 * lps[i])
    assert want.text == ranked[best][0].text
    cfg = SessionConfig(format=AudioFormat("wav", 0), continuous=False, decoder="beam")
    finals = [e for e in drive(b, Session(b, cfg), split(wav, 3333)) if isinstance(e, Final)]
    assert [f.text for f in finals] == [want.text]
    assert finals[0].words == want.words


def test_partial_words_in_stream_time_equal_a_fresh_shift(tmp_path) -> None:
    """Partials reuse the stream-time words of the partials before them (Session._shift keeps
    them by reference): every partial's words equal the decoder's words shifted afresh by the
    utterance's start, across several utterances (max_utterance_s cuts them)."""
    from models.decoding import shift_words

    shipped = load()
    wav = tmp_path / "a.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), "turn on the lights in the "
                    "kitchen please and then call my mother about the dinner tomorrow"], check=True)
    pcm = (load_audio(wav, sample_rate=16_000) * 32767).astype("<i2").tobytes()
    session = Session(shipped, SessionConfig(endpoint=EndpointConfig(max_utterance_s=1.5)))
    checked: list[int] = []

    async def main() -> None:
        async with Dispatcher(make_backend("torch", shipped)) as disp:
            sid = disp.open_stream()
            for i, f in enumerate(split(pcm, 3200)):
                for x in session.feed(f, now=float(i)):
                    for e in session.on_output(await disp.step(sid, x)):
                        if isinstance(e, Partial):
                            want = shift_words(session.decoder.result().words,
                                               session.utt_start * session.frame_s)
                            assert e.words == want
                            checked.append(len(want))

    asyncio.run(main())
    assert session.finals_made >= 2 and len(checked) >= 5 and max(checked) >= 2
