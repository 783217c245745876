"""Incoming audio decoding: any framing gives the same samples; bad input gets a specific error."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from models.audio import AudioError, load_audio, resample
from server.audio_in import AudioFormat, StreamDecoder


def pieces(data: bytes, rng: np.random.Generator, align: int = 1) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        n = int(rng.integers(1, 4000)) * align
        out.append(data[pos : pos + n])
        pos += n
    return out


def decode_all(dec: StreamDecoder, frames: list[bytes]) -> np.ndarray:
    return np.concatenate([*(dec.feed(f) for f in frames), dec.flush()])


def speechlike(rate: int, seconds: float = 1.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32)


@pytest.mark.parametrize("rate", [4000, 8000, 16000, 22050, 44100, 48000, 96000])
def test_pcm16_any_framing_equals_one_shot(rate: int) -> None:
    x = speechlike(rate)
    pcm = (x * 32767).astype("<i2")
    want = resample(pcm.astype(np.float32) / 32768.0, rate, 16000)
    rng = np.random.default_rng(rate)
    got = decode_all(StreamDecoder(AudioFormat("pcm_s16le", rate)), pieces(pcm.tobytes(), rng, 2))
    assert abs(got.size - want.size) <= 1
    n = min(got.size, want.size)
    assert np.abs(got[:n] - want[:n]).max() < 2e-3


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT", "ULAW"])
@pytest.mark.parametrize("channels", [1, 2])
def test_wav_header_in_stream_split_anywhere(subtype: str, channels: int) -> None:
    rate = 22050
    x = speechlike(rate)
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    buf = io.BytesIO()
    sf.write(buf, data, rate, subtype=subtype, format="WAV")
    wav = buf.getvalue()
    want = load_audio(wav)  # soundfile decode + one-shot resample
    for seed in range(3):
        rng = np.random.default_rng(seed)
        frames, pos = [], 0
        while pos < len(wav):  # tiny pieces at first so the header is split, then whole samples
            n = 7 if pos < 100 else int(rng.integers(1, 500)) * 4 * channels
            frames.append(wav[pos : pos + n])
            pos += n
        dec = StreamDecoder(AudioFormat("wav", 0))
        try:
            got = decode_all(dec, frames)
        except AudioError as exc:  # only whole-sample misalignment after the header is allowed
            pytest.fail(f"{exc}")
        assert dec.fmt is not None and dec.fmt.sample_rate == rate and dec.fmt.channels == channels
        n = min(got.size, want.size)
        assert abs(got.size - want.size) <= 1 and np.abs(got[:n] - want[:n]).max() < 2e-3


def test_mulaw_raw_matches_soundfile() -> None:
    x = speechlike(8000)
    buf = io.BytesIO()
    sf.write(buf, x, 8000, subtype="ULAW", format="RAW")
    want, _ = sf.read(io.BytesIO(buf.getvalue()), samplerate=8000, channels=1, subtype="ULAW",
                      format="RAW", dtype="float32")
    dec = StreamDecoder(AudioFormat("mulaw", 8000), target_rate=8000)
    assert np.abs(dec.feed(buf.getvalue()) - want).max() < 1e-6


@pytest.mark.parametrize("fmt, message", [
    (AudioFormat("opus", 16000), "encoding must be one of"),
    (AudioFormat("pcm_s16le", 0), "sample_rate must be between 4000 and 192000 Hz, got 0"),
    (AudioFormat("pcm_s16le", -16000), "got -16000"),
    (AudioFormat("pcm_s16le", 10**9), "got 1000000000"),
    (AudioFormat("pcm_s16le", 16000, channels=0), "channels must be an integer 1..8"),
])
def test_bad_formats(fmt: AudioFormat, message: str) -> None:
    with pytest.raises(AudioError, match=message):
        StreamDecoder(fmt)


def test_bad_frames_are_refused_and_earlier_audio_kept() -> None:
    dec = StreamDecoder(AudioFormat("pcm_s16le", 16000))
    assert dec.feed(b"\x00\x01" * 100).size == 100
    with pytest.raises(AudioError, match="frames of whole samples \\(2 bytes each\\); got a frame of 3"):
        dec.feed(b"\x00\x01\x02")
    assert dec.feed(b"\x00\x01" * 10).size == 10 and dec.samples_in == 110
    f32 = StreamDecoder(AudioFormat("pcm_f32le", 16000))
    with pytest.raises(AudioError, match="NaN or infinite"):
        f32.feed(np.array([0.0, np.nan], "<f4").tobytes())
    with pytest.raises(AudioError, match="expects a RIFF/WAVE header"):
        StreamDecoder(AudioFormat("wav", 0)).feed(b"\x00" * 64)
    buf = io.BytesIO()
    sf.write(buf, speechlike(16000, 0.1), 16000, subtype="PCM_24", format="WAV")
    with pytest.raises(AudioError, match="24 bits per sample is not supported"):
        StreamDecoder(AudioFormat("wav", 0)).feed(buf.getvalue())
    wav = StreamDecoder(AudioFormat("wav", 0))
    wav.feed(b"RIFF\x00\x00\x00\x00WAVEfmt ")
    with pytest.raises(AudioError, match="ended inside the WAV header"):
        wav.flush()


def wav_with_fmt(fmt_body: bytes) -> bytes:
    """A WAV header with the given 'fmt ' chunk body, then an empty data chunk."""
    fmt = b"fmt " + len(fmt_body).to_bytes(4, "little") + fmt_body + b"\x00" * (len(fmt_body) & 1)
    body = b"WAVE" + fmt + b"data" + (0).to_bytes(4, "little")
    return b"RIFF" + len(body).to_bytes(4, "little") + body


@pytest.mark.parametrize("data, message", [
    pytest.param(wav_with_fmt(b"\x01\x00\x01\x00"),
                 "'fmt ' chunk of 4 bytes; expected at least 16", id="fmt-4-bytes"),
    pytest.param(wav_with_fmt(b"\x01\x00\x01\x00\x80\x3e\x00\x00\x00\x7d\x00\x00\x02\x00"),
                 "'fmt ' chunk of 14 bytes; expected at least 16", id="fmt-14-bytes"),
    pytest.param(wav_with_fmt(b"\xfe\xff" + b"\x01\x00\x80\x3e\x00\x00\x00\x7d\x00\x00\x02\x00"
                              + b"\x10\x00\x00\x00"),
                 "format tag 65534 with 16 bits per sample is not supported",
                 id="extensible-too-short"),
    pytest.param(b"RIFF\x00\x00\x00\x00WAVEjunk" + (0xFFFFFFF0).to_bytes(4, "little"),
                 "'junk' chunk of 4294967280 bytes", id="chunk-past-header-limit"),
])
def test_short_or_oversized_wav_chunks_get_a_specific_error(data: bytes, message: str) -> None:
    for cut in (len(data), len(data) + 10):  # whole, and with sample bytes after it
        with pytest.raises(AudioError, match=message.replace("(", r"\(")):
            StreamDecoder(AudioFormat("wav", 0)).feed((data + b"\x00" * 10)[:cut])


def test_huge_finite_floats_saturate_instead_of_poisoning_the_stream() -> None:
    """A finite but absurd pcm_f32le value (3e38) used to overflow the stereo mix-down and the
    resampler to inf (NaN features, then NaN model state for the rest of the stream); samples
    beyond [-1, 1] are clipped as PCM would saturate."""
    huge = np.array([3e38, 3e38, -3e38, 0.5] * 500, "<f4").tobytes()
    for fmt in (AudioFormat("pcm_f32le", 16000, 2), AudioFormat("pcm_f32le", 22050, 1)):
        x = StreamDecoder(fmt).feed(huge)
        assert np.isfinite(x).all() and np.abs(x).max() < 1.5
    x = StreamDecoder(AudioFormat("pcm_f32le", 16000)).feed(np.array([5.0, -7.0, 0.25], "<f4").tobytes())
    assert x.tolist() == [1.0, -1.0, 0.25]
