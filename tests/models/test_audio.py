import numpy as np
import pytest
import soundfile as sf

from models.audio import AudioError, load_audio, resample, to_mono


def tone(rate: int, seconds: float = 0.5, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.mark.parametrize("rate", [4000, 8000, 11025, 22050, 44100, 48000, 96000, 192000])
def test_load_resamples_to_16k_and_keeps_the_tone(tmp_path, rate: int) -> None:
    path = tmp_path / f"t{rate}.wav"
    sf.write(path, tone(rate), rate, subtype="PCM_16")
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(x.size - 8000) <= 2
    spectrum = np.abs(np.fft.rfft(x))
    peak_hz = np.argmax(spectrum) * 16000 / x.size
    assert abs(peak_hz - 440.0) < 5


def test_stereo_is_mixed_down(tmp_path) -> None:
    left = tone(16000)
    stereo = np.stack([left, -left * 0 + 0.25], axis=1)
    path = tmp_path / "s.flac"
    sf.write(path, stereo, 16000)
    x = load_audio(path)
    np.testing.assert_allclose(x, (left + 0.25) / 2, atol=1e-4)
    assert to_mono(stereo).shape == (16000 // 2,)


def test_bytes_input(tmp_path) -> None:
    path = tmp_path / "b.wav"
    sf.write(path, tone(16000), 16000)
    np.testing.assert_allclose(load_audio(path.read_bytes()), load_audio(path))


def test_missing_file(tmp_path) -> None:
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav")


def test_unreadable_file(tmp_path) -> None:
    path = tmp_path / "junk.wav"
    path.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioError, match="cannot read audio"):
        load_audio(path)


def test_empty_audio(tmp_path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty"):
        load_audio(path)


@pytest.mark.parametrize("rate", [2000, 3999, 192001, 384000])
def test_unsupported_rate(tmp_path, rate: int) -> None:
    """Files from 4 kHz to 192 kHz are resampled (the tone test above); rates outside are
    refused naming the file and the range."""
    path = tmp_path / "r.wav"
    sf.write(path, tone(rate, 0.1, hz=200.0), rate)
    with pytest.raises(AudioError, match=r"sample rate of .*r\.wav must be between 4000 and 192000"):
        load_audio(path)


def test_resample_identity_and_bad_rate() -> None:
    x = tone(16000)
    assert resample(x, 16000) is not None and np.array_equal(resample(x, 16000), x)
    with pytest.raises(AudioError, match="integer"):
        resample(x, 16000.5)  # type: ignore[arg-type]


def test_speak_returns_speech_at_the_asked_rate_and_names_the_missing_engine(monkeypatch) -> None:
    """speak(): espeak-ng's speech as float32 mono at the requested rate (a 2-word sentence runs
    0.3-3 s and is not silence); with no espeak-ng on PATH, a RuntimeError naming the package."""
    from models.audio import speak

    a16 = speak("hello world")
    a8 = speak("hello world", sample_rate=8_000)
    assert a16.dtype == np.float32 and a16.ndim == 1 and 0.3 < len(a16) / 16_000 < 3.0
    assert abs(len(a8) / 8_000 - len(a16) / 16_000) < 0.01  # same speech, resampled
    assert np.sqrt(np.mean(a16 ** 2)) > 0.01
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RuntimeError, match="espeak-ng.*make system"):
        speak("hello")
