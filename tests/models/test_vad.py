"""The neural VAD (Silero v6, ONNX on onnxruntime) on real synthesized speech with known pauses."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from models.audio import load_audio
from models.vad import WINDOW_S, StreamingVad, VadConfig, check_rate, speech_segments

RATE = 16_000


def _say(tmp_path, name: str, text: str, voice: str = "en-us") -> np.ndarray:
    wav = tmp_path / f"{name}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True)
    return load_audio(wav, sample_rate=RATE)


def _silence(s: float) -> np.ndarray:
    return np.zeros(int(s * RATE), np.float32)


def _voiced_extent(x: np.ndarray) -> tuple[float, float]:
    """Where the synthesized utterance really has signal (espeak pads with silence)."""
    idx = np.flatnonzero(np.abs(x) > 0.01)
    return idx[0] / RATE, idx[-1] / RATE


@pytest.fixture(scope="module")
def utterances(tmp_path_factory) -> list[np.ndarray]:
    tmp = tmp_path_factory.mktemp("vad")
    return [_say(tmp, "a", "turn on the lights in the kitchen please"),
            _say(tmp, "b", "set a timer for ten minutes", voice="en-gb")]


def _joined(utterances, gap_s: float, lead_s: float = 1.0) -> tuple[np.ndarray, list[tuple]]:
    """lead silence, utt 0, gap, utt 1, 1 s tail, each utterance trimmed to its voiced extent
    (so the gap is all the silence between them) -> (audio, (start, end) of each)."""
    parts, spans, t = [_silence(lead_s)], [], lead_s
    for i, u in enumerate(utterances):
        s, e = _voiced_extent(u)
        u = u[int(s * RATE) : int(e * RATE) + 1]
        spans.append((t, t + u.size / RATE))
        parts.append(u)
        t += u.size / RATE
        if i == 0:
            parts.append(_silence(gap_s))
            t += gap_s
    parts.append(_silence(1.0))
    return np.concatenate(parts), spans


def test_segments_cover_each_utterance_and_skip_the_pause(utterances) -> None:
    """Two utterances 1.5 s apart -> two padded segments around their voiced extents, none in
    the leading second of silence or the pause."""
    audio, spans = _joined(utterances, gap_s=1.5)
    segs = speech_segments(audio, RATE)
    assert len(segs) == 2, segs
    for (s, e), (vs, ve) in zip(segs, spans, strict=True):
        assert vs - 0.45 <= s <= vs + 0.1, (segs, spans)  # starts at the speech, padded 200 ms
        assert ve - 0.15 <= e <= ve + 0.45, (segs, spans)
    assert segs[0][0] > 0.5 and segs[1][0] - segs[0][1] > 0.8


def test_a_short_pause_does_not_split_speech(utterances) -> None:
    """A 150 ms gap is under min_silence_ms (300): one segment; with min_silence_ms=50 the
    speech is split, and one split lies at that gap."""
    audio, spans = _joined(utterances, gap_s=0.15)
    assert len(speech_segments(audio, RATE)) == 1
    fine = speech_segments(audio, RATE, VadConfig(min_silence_ms=50, pad_ms=0))
    assert any(abs(e - spans[0][1]) < 0.2 for _, e in fine[:-1]), (fine, spans)


def test_silence_and_faint_noise_are_not_speech() -> None:
    rng = np.random.default_rng(0)
    assert speech_segments(_silence(3.0), RATE) == []
    assert speech_segments((rng.standard_normal(3 * RATE) * 0.003).astype(np.float32), RATE) == []


def test_streaming_decisions_do_not_depend_on_piece_sizes(utterances) -> None:
    """Fed in 700-sample pieces (not a multiple of the 512-sample window) or whole: the same
    windows, probabilities and speech runs."""
    audio, _ = _joined(utterances, gap_s=0.7)
    whole, pieces = StreamingVad(), StreamingVad()
    a = whole.accept(audio)
    b = [d for i in range(0, audio.size, 700) for d in pieces.accept(audio[i : i + 700])]
    assert len(a) == len(b) == audio.size // 512
    assert [on for _, on in a] == [on for _, on in b]
    assert np.allclose([p for p, _ in a], [p for p, _ in b], atol=1e-5)
    assert whole.speech_at(whole.seen_s) == pieces.speech_at(pieces.seen_s)


def test_speech_at_answers_for_past_times_not_only_the_newest(utterances) -> None:
    """After hearing everything, asking about a moment inside utterance 0 says speech; a moment
    in the pause says silence, with speech ending near utterance 0's voiced end; before any
    speech: None."""
    audio, spans = _joined(utterances, gap_s=1.5)
    vad = StreamingVad()
    vad.accept(audio)
    (s0, e0), (s1, _) = spans
    assert vad.speech_at(0.5) == (False, None)
    speaking, end = vad.speech_at((s0 + e0) / 2)
    assert speaking and end == pytest.approx((s0 + e0) / 2, abs=WINDOW_S)
    speaking, end = vad.speech_at(e0 + 1.0)
    assert not speaking and e0 - 0.15 <= end <= e0 + 0.3, (end, e0)
    assert vad.speech_at(s1 + 0.5)[0]
    assert not vad.in_speech  # the tail is silence


def test_bad_settings_and_rates_are_refused() -> None:
    with pytest.raises(ValueError, match="threshold must be in"):
        VadConfig(threshold=1.5).validate()
    with pytest.raises(ValueError, match="hysteresis must be in"):
        VadConfig(hysteresis=0.6).validate()
    with pytest.raises(ValueError, match="pad_ms must be >= 0"):
        VadConfig(pad_ms=-1).validate()
    with pytest.raises(ValueError, match="runs at 16000 Hz"):
        check_rate(8000)
