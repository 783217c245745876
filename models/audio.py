"""Audio loading, mono mix-down and resampling (soundfile + soxr), with specific errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

MIN_SAMPLE_RATE_HZ = 4_000  # below: too little bandwidth to call it speech audio
MAX_SAMPLE_RATE_HZ = 192_000  # studio rates; soxr resamples any ratio
TARGET_SAMPLE_RATE_HZ = 16_000


class AudioError(ValueError):
    """Audio that cannot be used; the message says which file/field and what was expected."""


def check_sample_rate(sample_rate: int, *, field: str = "sample_rate") -> int:
    if not isinstance(sample_rate, int) or isinstance(sample_rate, bool):
        raise AudioError(f"{field} must be an integer number of Hz, got {sample_rate!r}")
    if not MIN_SAMPLE_RATE_HZ <= sample_rate <= MAX_SAMPLE_RATE_HZ:
        raise AudioError(
            f"{field} must be between {MIN_SAMPLE_RATE_HZ} and {MAX_SAMPLE_RATE_HZ} Hz, "
            f"got {sample_rate}"
        )
    return sample_rate


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(S,) or (S, C) -> (S,) float32, channels averaged."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 1:
        return x
    if x.ndim == 2:
        return x.mean(axis=1, dtype=np.float32)
    raise AudioError(f"audio must be (samples,) or (samples, channels), got shape {x.shape}")


def resample(samples: np.ndarray, from_rate: int, to_rate: int = TARGET_SAMPLE_RATE_HZ) -> np.ndarray:
    """Resample mono float32 samples with soxr (high quality)."""
    check_sample_rate(from_rate, field="source sample_rate")
    x = np.asarray(samples, dtype=np.float32)
    if from_rate == to_rate:
        return x
    import soxr

    return soxr.resample(x, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)


def to_pcm16(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] -> little-endian 16-bit PCM bytes (clipped)."""
    return (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def load_audio(
    source: str | Path | bytes, *, sample_rate: int = TARGET_SAMPLE_RATE_HZ
) -> np.ndarray:
    """Read a file (or in-memory file bytes) of any format libsndfile knows.

    Returns mono float32 samples in [-1, 1] at `sample_rate`.
    """
    import soundfile as sf

    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise AudioError(f"audio file not found: {name}")
    try:
        handle = io.BytesIO(source) if isinstance(source, bytes) else source
        data, rate = sf.read(handle, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(f"cannot read audio {name}: {exc}") from exc
    if data.shape[0] == 0:
        raise AudioError(f"audio {name} is empty (0 samples)")
    try:
        check_sample_rate(int(rate), field=f"sample rate of {name}")
    except AudioError as exc:
        raise AudioError(str(exc)) from None
    return resample(to_mono(data), int(rate), sample_rate)


def speak(text: str, voice: str = "en-us", sample_rate: int = TARGET_SAMPLE_RATE_HZ) -> np.ndarray:
    """`text` spoken by espeak-ng's `voice`, float32 mono at `sample_rate`: real speech for
    benchmarks and load tools that must not depend on a corpus (one subprocess per call)."""
    import shutil
    import subprocess
    import tempfile

    if not shutil.which("espeak-ng"):
        raise RuntimeError("speaking a benchmark sentence needs espeak-ng, which is not "
                           "installed: run `make system` (Debian package espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True,
                       stdout=subprocess.DEVNULL)
        return load_audio(wav, sample_rate=sample_rate)
