"""training.eval.vad_endpoint: how test streams are built and how cuts are scored."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

import numpy as np
import pytest

from models.audio import load_audio
from server.session import Final
from training.eval.run import Utterance
from training.eval.vad_endpoint import (
    PAUSES,
    RATE,
    TAIL_S,
    JoinedStream,
    build_streams,
    score,
    voiced,
    with_noise,
)


@dataclass
class _Cut:  # what Utterance.audio() reads: lhotse's load_audio() shape, (channels, samples)
    samples: np.ndarray

    def load_audio(self) -> np.ndarray:
        return self.samples[None]


@pytest.fixture(scope="module")
def utts(tmp_path_factory) -> list[Utterance]:
    tmp = tmp_path_factory.mktemp("utts")
    out = []
    for i, text in enumerate(["call mom", "turn on the lights", "set a timer", "what time is it"]):
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(tmp / f"{i}.wav"), text], check=True)
        x = load_audio(tmp / f"{i}.wav", sample_rate=RATE)
        out.append(Utterance(str(i), text, "espeak-ng", "commands", "v", x.size / RATE, _Cut(x)))
    return out


def test_streams_hold_three_trimmed_utterances_at_their_spans(utts) -> None:
    streams = build_streams(utts, 5, seed=0)
    again = build_streams(utts, 5, seed=0)  # same seed, same streams
    assert all(np.array_equal(a.audio, b.audio) and a.spans == b.spans
               for a, b in zip(streams, again, strict=True))
    for s in streams:
        assert len(s.spans) == 3 and s.pauses[-1] == TAIL_S
        assert all(p in PAUSES for p in s.pauses[:2])
        assert len(s.ref.split()) >= 3
        for (a, b), pause, nxt in zip(s.spans, s.pauses, [*s.spans[1:], None], strict=True):
            seg = s.audio[int(a * RATE) : int(b * RATE)]
            gap = s.audio[int(b * RATE) + 1 : int((b + pause) * RATE) - 1]
            assert np.abs(seg).max() > 0.05 and np.abs(gap).max() == 0  # speech, then silence
            if nxt is not None:
                assert nxt[0] == pytest.approx(b + pause, abs=1e-3)
        noisy = with_noise(s, 10.0, np.random.default_rng(0))
        speech = np.concatenate([s.audio[int(a * RATE) : int(b * RATE)] for a, b in s.spans])
        noise = noisy.audio - s.audio
        snr = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(noise**2))
        assert snr == pytest.approx(10.0, abs=0.5)  # unless clipping forced a rescale


def test_voiced_trims_silence_but_keeps_a_margin() -> None:
    x = np.concatenate([np.zeros(RATE), np.full(RATE // 2, 0.5, np.float32), np.zeros(RATE)])
    y = voiced(x.astype(np.float32))
    assert y.size == RATE // 2 + 2 * int(0.03 * RATE)


def _final(end: float, text: str = "x") -> Final:
    return Final(text, [], 1.0, 0.0, end, [], end)


def test_score_times_each_cut_from_its_speech_end_and_counts_the_misses() -> None:
    """Spans (1, 2), (2.7, 4), (7, 8); pauses 0.7, 3.0, tail 2.0. Cuts at 2.5 (0.5 after the
    first speech ended), 3.3 (inside the second utterance), 4.6 (0.6 after it), none in the
    tail: the last utterance's final came only at the end of the stream."""
    s = JoinedStream(np.zeros(10 * RATE, np.float32), [(1.0, 2.0), (2.7, 4.0), (7.0, 8.0)],
                   [0.7, 3.0, 2.0], "a b c")
    r = score([s], [([_final(2.5, "a"), _final(3.3, "b"), _final(4.6)], [_final(10.0, "c")])])
    assert r["time_to_final_pause"] == {"n": 2, "median_s": pytest.approx(0.55),
                                        "p90_s": pytest.approx(0.59)}
    assert r["time_to_final_tail"]["n"] == 0
    assert r["cut_rate_by_pause_s"] == {"0.3": None, "0.7": 1.0, "1.5": None, "3": 1.0, "2": 0.0}
    assert r["cuts_inside_speech"] == 1 and r["extra_finals_in_pauses"] == 0
    assert r["wer"] == pytest.approx(100 / 3, abs=0.1)  # "a b x c" vs "a b c": one insertion
