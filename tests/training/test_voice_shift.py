"""Derived voices (training.data.synth.voice_shift): fixed per voice, measurable in the signal,
and held out with their base speaker."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from models.audio import load_audio
from training.data.synth.split import split_voices
from training.data.synth.voice_shift import (
    FORMANT_RANGE,
    INTONATION_RANGE,
    PITCH_RANGE,
    VoiceShift,
    apply_shift,
    derive_voices,
    shift_of,
)
from training.data.synth.voices import Voice

parselmouth = pytest.importorskip("parselmouth")
RATE = 16_000


def _voices(engine: str, n: int) -> list[Voice]:
    return [Voice(engine, f"v{i}", f"{engine}-g{i}") for i in range(n)]


def test_every_engine_reaches_the_minimum_and_derived_voices_keep_their_speaker() -> None:
    base = _voices("pico", 2) + _voices("espeak-ng", 30) + _voices("piper", 1)
    out = derive_voices(base, 12)
    per = {e: [v for v in out if v.engine == e] for e in ("pico", "espeak-ng", "piper")}
    assert (len(per["pico"]), len(per["espeak-ng"]), len(per["piper"])) == (12, 30, 12)
    assert len({v.id for v in out}) == len(out)
    for v in out:
        assert (v.shift > 0) == ("+vs" in v.id)
        assert v.group == f"{v.engine}-g{v.name[1:]}"  # the base voice's speaker group
    assert derive_voices(base, 0) == base


def test_a_derived_voice_has_one_fixed_shift_within_the_ranges() -> None:
    assert shift_of(Voice("pico", "en-US", "g")) is None
    shifts = [shift_of(Voice("pico", "en-US", "g", k)) for k in range(1, 40)]
    assert shifts[0] == shift_of(Voice("pico", "en-US", "g", 1))  # the same speaker every time
    assert len(set(shifts)) == len(shifts)
    for s in shifts:
        assert FORMANT_RANGE[0] <= s.formant <= FORMANT_RANGE[1]
        assert PITCH_RANGE[0] - 1e-3 <= s.pitch <= PITCH_RANGE[1] + 1e-3
        assert INTONATION_RANGE[0] - 1e-3 <= s.intonation <= INTONATION_RANGE[1] + 1e-3


def test_derived_voices_are_held_out_with_their_base_speaker() -> None:
    out = derive_voices(_voices("flite", 5) + _voices("espeak-ng", 40), 20)
    pools = split_voices(out, seed=0)
    where = {v.id: s for s in ("train", "test") for v in pools[s]}
    for v in out:
        base = Voice(v.engine, v.name, v.group).id
        if v.id in where and base in where:
            assert where[v.id] == where[base], v.id


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    wav = tmp_path_factory.mktemp("vs") / "a.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav),
                    "the quick brown fox jumps over the lazy dog"], check=True)
    return load_audio(wav, sample_rate=RATE)


def _median_f0(x: np.ndarray) -> float:
    p = parselmouth.Sound(x.astype(np.float64), RATE).to_pitch(pitch_floor=60, pitch_ceiling=500)
    f0 = p.selected_array["frequency"]
    return float(np.median(f0[f0 > 0]))


def _centroid(x: np.ndarray) -> float:
    """Spectral centroid below 5 kHz: where the formants sit, on average (a formant tracker
    jumps between peaks on synthetic speech; the centroid moves with the envelope)."""
    power = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    f = np.fft.rfftfreq(x.size, 1 / RATE)
    keep = f < 5000
    return float((power[keep] * f[keep]).sum() / power[keep].sum())


def test_the_shift_moves_pitch_and_formants_as_asked(speech) -> None:
    f0, c = _median_f0(speech), _centroid(speech)
    up = apply_shift(speech, RATE, VoiceShift(formant=1.15, pitch=1.3, intonation=1.0))
    assert abs(up.size - speech.size) <= RATE // 100
    assert _median_f0(up) / f0 == pytest.approx(1.3, rel=0.08)
    assert _centroid(up) / c > 1.08  # formants up
    down = apply_shift(speech, RATE, VoiceShift(formant=0.88, pitch=1.0, intonation=1.0))
    assert _median_f0(down) / f0 == pytest.approx(1.0, rel=0.08)  # formants alone
    assert _centroid(down) / c < 0.93  # and down
    assert np.abs(up).max() <= 0.99 and np.abs(down).max() <= 0.99
