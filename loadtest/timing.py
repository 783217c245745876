"""Real-time pacing, latency accounting and latency summaries: what every load generator in
loadtest/ shares (`chorus loadtest capacity`, the locust users, and the healthy streams of
faults, fuzz and soak in loadtest/harness.py).

Pacing. A stream's audio goes out in frames (100 ms; the last frame of an audio is shorter),
each when it is due in real time: when the audio sent before it has played (`t0` + samples
sent / rate, `t0` the first frame's send time), so a short frame brings the next one forward
by exactly the audio it lacks.

Accounting. `SendLog` keeps each frame's send time and the samples it held: audio is counted
in samples, never in frames. A result's `audio_processed` (the stream seconds the server had
received when it made the result, rounded to 1 ms) names the frame that completed that audio:
the one whose cumulative audio equals it (within the rounding). A partial's latency is its
arrival minus that frame's send time. A result that names no frame boundary is `unmatched`
(the client's audio count and the server's disagree: 0 when the accounting is right).

End of stream. The partials whose audio_processed is the whole stream's audio (made by the
last frame or by the flush of the padded tail that `stop` / the half-close triggers: a client
cannot tell the two apart) are end-of-stream partials, timed the same way but reported apart,
so a flush never counts as a real-time partial.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

RATE = 16_000  # Hz: what the load generators send (PCM16 mono)
SAMPLE_BYTES = 2
FRAME_S = 0.1
FRAME_BYTES = int(RATE * FRAME_S) * SAMPLE_BYTES  # 100 ms of 16 kHz PCM16
ROUNDING_S = 0.0005  # the server rounds audio_processed to 1 ms


def frames(pcm: bytes, size: int = FRAME_BYTES) -> list[bytes]:
    """`pcm` cut into frames of `size` bytes (the last one shorter when it does not divide)."""
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


def looped(pcm: bytes, size: int = FRAME_BYTES) -> Iterator[bytes]:
    """The frames of `pcm`, over and over (each pass ends with its own short frame)."""
    return itertools.cycle(frames(pcm, size))


@dataclass
class Latencies:
    """Seconds, per matched result: real-time partials (`picked`: their indices in the results
    given) and end-of-stream partials; how many results named no frame; how many were left out
    because their frame was sent outside the measured window."""

    realtime: list[float] = field(default_factory=list)
    end: list[float] = field(default_factory=list)
    unmatched: int = 0
    outside: int = 0
    picked: list[int] = field(default_factory=list)


def latencies(sent: Sequence[tuple[float, int]], results: Iterable[tuple[float, float]], *,
              rate: int = RATE, ended: bool = True,
              window: tuple[float, float] | None = None) -> Latencies:
    """The latency of each partial of one stream.

    sent: (send time, samples) of each frame, in order; results: (audio_processed seconds,
    arrival time) of each partial; ended: the stream ended with `stop` / a half-close after its
    last frame (its partials for the whole audio are end-of-stream ones); window: (from, to)
    send times: only partials whose frame was sent inside count as real-time."""
    cum = list(itertools.accumulate(n for _, n in sent))  # samples through each frame
    out = Latencies()
    tol = ROUNDING_S * rate + 1e-6  # samples
    for i, (audio, arrival) in enumerate(results):
        at = audio * rate
        j = bisect.bisect_right(cum, at + tol) - 1  # the last frame within audio_processed
        if j < 0 or abs(cum[j] - at) > tol:
            out.unmatched += 1
        elif ended and j == len(cum) - 1:
            out.end.append(arrival - sent[j][0])
        elif window is not None and not window[0] <= sent[j][0] <= window[1]:
            out.outside += 1
        else:
            out.realtime.append(arrival - sent[j][0])
            out.picked.append(i)
    return out


class SendLog:
    """One stream as a load client sent it: the frames (send time, samples) and the pacing
    clock; the partials it got back (audio_processed, arrival, the server's
    processing_latency_ms); when it sent `stop` (or half-closed)."""

    def __init__(self, rate: int = RATE, sample_bytes: int = SAMPLE_BYTES):
        self.rate, self.sample_bytes = rate, sample_bytes
        self.sent: list[tuple[float, int]] = []
        self.samples = 0
        self.t0: float | None = None
        self.results: list[tuple[float, float]] = []
        self.server_ms: list[float] = []
        self.stopped: float | None = None

    def wait(self, until: float | None = None) -> float | None:
        """Seconds until the next frame is due in real time (0 for the first); None when it
        is due at or after `until` (a perf_counter time): the stream should stop."""
        now = time.perf_counter()
        due = now if self.t0 is None else self.t0 + self.samples / self.rate
        if until is not None and due >= until:
            return None
        return max(0.0, due - now)

    def frame(self, data: bytes) -> None:
        """`data` is being sent now."""
        t = time.perf_counter()
        if self.t0 is None:
            self.t0 = t
        n = len(data) // self.sample_bytes
        self.sent.append((t, n))
        self.samples += n

    def partial(self, audio_processed: float, server_ms: float = 0.0) -> None:
        """A partial arrived now."""
        self.results.append((audio_processed, time.perf_counter()))
        self.server_ms.append(server_ms)

    def stop(self) -> None:
        """`stop` is being sent now (the end of the stream's audio)."""
        self.stopped = time.perf_counter()

    def since_stop(self) -> float:
        """Seconds since the stop (the final's latency, measured when it arrives)."""
        return time.perf_counter() - (self.stopped if self.stopped is not None else
                                      self.sent[-1][0] if self.sent else time.perf_counter())

    def latencies(self, window: tuple[float, float] | None = None) -> Latencies:
        return latencies(self.sent, self.results, rate=self.rate,
                         ended=self.stopped is not None, window=window)


async def paced(chunks: Iterable[bytes], log: SendLog, *, realtime: bool = True,
                until: float | None = None) -> AsyncIterator[bytes]:
    """The chunks, each when it is due in real time (at once when not `realtime`), logged as
    sent as they are handed over; none due at or after `until`."""
    for data in chunks:
        if (wait := log.wait(until)) is None:
            return
        if realtime:
            await asyncio.sleep(wait)
        log.frame(data)
        yield data


def paced_sync(chunks: Iterable[bytes], log: SendLog, *, realtime: bool = True) -> Iterator[bytes]:
    """`paced` for blocking clients (the locust users: gevent patches time.sleep; the
    harness's gRPC client thread)."""
    for data in chunks:
        if realtime:
            time.sleep(log.wait() or 0.0)
        log.frame(data)
        yield data


# ---- summaries ---------------------------------------------------------------------------------
def percentiles_ms(seconds: Sequence[float], prefix: str = "",
                   qs: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    """{"<prefix>p50_ms": ..., ...} of latencies in seconds (NaN when there are none)."""
    v = np.asarray(seconds if len(seconds) else [np.nan], dtype=float) * 1000
    return {f"{prefix}p{q}_ms": round(float(np.percentile(v, q)), 1) for q in qs}


def across_runs(runs: Sequence[dict[str, float]], keys: Sequence[str]) -> dict[str, float]:
    """Repeated runs of one load point: per key the median of the runs (under the key itself)
    and their spread (`<key>_min`, `<key>_max`)."""
    out: dict[str, float] = {}
    for k in keys:
        v = np.asarray([r[k] for r in runs], dtype=float)  # a NaN run (no partials) stays NaN
        out[k] = round(float(np.median(v)), 2)
        out[f"{k}_min"], out[f"{k}_max"] = round(float(v.min()), 2), round(float(v.max()), 2)
    return out


__all__ = ["RATE", "SAMPLE_BYTES", "FRAME_S", "FRAME_BYTES", "frames", "looped", "Latencies",
           "latencies", "SendLog", "paced", "paced_sync", "percentiles_ms", "across_runs"]
