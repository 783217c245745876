"""The load generators' shared pacing and latency accounting (loadtest/timing.py), on synthetic
schedules: exact audio per frame (short frames included), end-of-stream partials apart."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import random
import time

import pytest

from loadtest.capacity import CapacityConfig, Schedule
from loadtest.timing import RATE, SendLog, across_runs, latencies, paced

# one 3323-sample audio looped: frames of 1600, 1600 and a short 123 samples, three passes
SAMPLES = [1600, 1600, 123] * 3
T0 = 100.0


def schedule() -> list[tuple[float, int]]:
    """Each frame sent when the audio before it has played (real time, exact)."""
    before = [0, *itertools.accumulate(SAMPLES)][:-1]
    return [(T0 + b / RATE, n) for b, n in zip(before, SAMPLES, strict=True)]


def server_results(sent: list[tuple[float, int]], made_by: list[int]) -> list[tuple[float, float]]:
    """What a server reports: for a partial made by frame j, the audio received through j in
    seconds rounded to 1 ms (`audio_processed`); it arrives (j + 1) * 10 ms after frame j."""
    cum = list(itertools.accumulate(n for _, n in sent))
    return [(round(cum[j] / RATE, 3), sent[j][0] + 0.01 * (j + 1)) for j in made_by]


def credited(sent: list[tuple[float, int]], results: list[tuple[float, float]]) -> list[float]:
    """The accounting this replaced: every frame credited with 100 ms of audio."""
    credit = [0.1 * (k + 1) for k in range(len(sent))]
    return [t - sent[bisect.bisect_left(credit, a - 1e-6)][0] for a, t in results]


def test_latency_is_timed_from_the_frame_that_completed_audio_processed() -> None:
    sent = schedule()
    made_by = [1, 3, 4, 6, 7]  # frames 2 and 5 are short ones; 8 (short) is the last
    results = server_results(sent, made_by)
    lat = latencies(sent, results, ended=False)
    assert lat.realtime == pytest.approx([0.01 * (j + 1) for j in made_by])
    assert lat.picked == [0, 1, 2, 3, 4] and lat.end == [] and lat.unmatched == 0
    # frame credits run ahead of the audio once short frames pass: partials timed from frames
    # sent too early (the schedule must tell the two accountings apart)
    assert credited(sent, results) != pytest.approx(lat.realtime)


def test_the_streams_end_is_reported_apart() -> None:
    """Partials for the whole audio (the short last frame's and the stop's flush) are
    end-of-stream partials; the others stay real-time."""
    sent = schedule()
    last = len(sent) - 1
    results = server_results(sent, [4, 7, last, last])
    lat = latencies(sent, results, ended=True)
    assert lat.realtime == pytest.approx([0.05, 0.08]) and lat.picked == [0, 1]
    assert lat.end == pytest.approx([0.01 * (last + 1)] * 2)
    assert latencies(sent, results, ended=False).end == []  # not stopped: the last is a frame too


def test_window_and_unmatched() -> None:
    sent = schedule()
    results = server_results(sent, [0, 3, 6])
    lat = latencies(sent, results, ended=False, window=(sent[2][0], sent[5][0]))
    assert lat.realtime == pytest.approx([0.04]) and lat.outside == 2
    # audio between two frame boundaries (the client's count is not the server's)
    lat = latencies(sent, [(0.15, T0 + 1), (0.0, T0 + 1), (9.0, T0 + 1)], ended=False)
    assert lat.unmatched == 3 and lat.realtime == []


def test_a_frame_is_due_when_the_audio_before_it_has_played() -> None:
    """A short frame brings the next forward by exactly what it lacks; `until` ends a stream."""
    log = SendLog()
    assert log.wait() == 0.0  # the first frame: now
    log.frame(b"\0" * 3200)
    log.frame(b"\0" * 320)  # 10 ms of audio
    log.t0 = time.perf_counter()
    assert log.wait() == pytest.approx(0.11, abs=0.005)  # not 0.2 (two frames)
    assert log.wait(until=log.t0 + 0.1) is None


def test_paced_sends_in_real_time_until_the_stop() -> None:
    log = SendLog()
    chunks = [b"\0" * 3200, b"\0" * 320, b"\0" * 3200, b"\0" * 3200]

    async def run() -> None:
        until = time.perf_counter() + 0.16  # the 4th frame is due at 0.21 s
        async for _ in paced(chunks, log, until=until):
            pass

    asyncio.run(run())
    assert [n for _, n in log.sent] == [1600, 160, 1600]
    t = [s - log.sent[0][0] for s, _ in log.sent]
    assert t[1] >= 0.099 and t[2] >= 0.109  # never before its audio has played


def test_streams_start_and_stop_independently() -> None:
    cfg = CapacityConfig(seconds=5.0, spread_s=1.0, warm_s=2.0)
    plan = Schedule.draw(cfg, 64, 10.0, random.Random("0-64-0"))
    assert plan.window == (12.0, 17.0)
    assert all(10.0 <= s < 11.0 for s in plan.starts) and max(plan.starts) - min(plan.starts) > 0.9
    assert all(17.0 <= s < 18.0 for s in plan.stops) and len(set(plan.stops)) == 64
    # phases over a 320 ms chunk period are spread, not within one 100 ms frame
    assert max(s % 0.32 for s in plan.starts) - min(s % 0.32 for s in plan.starts) > 0.25
    again = Schedule.draw(cfg, 64, 10.0, random.Random("0-64-0"))
    assert again.starts == plan.starts  # seeded


def test_repeats_are_reported_as_median_and_range() -> None:
    runs = [{"p99_ms": 49.0}, {"p99_ms": 496.0}, {"p99_ms": 80.0}]
    assert across_runs(runs, ["p99_ms"]) == {"p99_ms": 80.0, "p99_ms_min": 49.0,
                                             "p99_ms_max": 496.0}
