"""`chorus data refine` (training.refine): signal checks, the filter, and the command on a tiny
synthesized corpus with two planted bad candidates."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.training.test_train import tiny_corpus  # noqa: F401  (fixture)
from training.refine import Candidate, RefineConfig, Signal, filter_pool, rate_z, signal_checks

ROOT = Path(__file__).parents[2]


def tone(seconds: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (amp * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_signal_checks_measure_clipping_silence_and_rate() -> None:
    x = np.concatenate([tone(1.0), np.zeros(16000, np.float32)])  # 1 s voiced, 1 s silent
    s = signal_checks(x, "abcde fghij")  # 10 letters
    assert s.clipping == 0.0
    assert s.silence == pytest.approx(0.5, abs=0.01)
    assert s.voiced_s == pytest.approx(1.0, abs=0.02)
    assert s.rate == pytest.approx(10.0, rel=0.03)
    clipped = np.clip(tone(1.0, amp=2.0), -1, 1)
    assert signal_checks(clipped, "a").clipping > 0.3
    assert signal_checks(np.zeros(10, np.float32), "a") == Signal(0.0, 1.0, 0.0, 0.0)


def test_rate_z_flags_the_outlier_only_within_its_domain() -> None:
    z = rate_z([10.0, 11.0, 9.5, 10.5, 10.2, 40.0, 0.0])
    assert all(abs(v) < 2 for v in z[:5])
    assert z[5] > 3.5 and z[6] == math.inf
    # spelled letters are slow in letters per second: judged against their own domain
    rates = [10.0, 11.0, 9.5, 10.5, 3.0, 3.3, 2.8, 3.1]
    z = rate_z(rates, ["dates"] * 4 + ["spelled"] * 4)
    assert all(abs(v) < 2 for v in z)
    assert rate_z([10.0, 11.0, 9.5, 10.5, 3.0], ["dates"] * 5)[4] < -3.5  # a truncated date
    # a tight pool (1 % spread) does not flag a 5 % deviation: the MAD floor
    assert abs(rate_z([10.0, 10.1, 9.9, 10.0, 10.5])[4]) < 1


def cand(i: int, cer: float, *, silence: float = 0.2, clipping: float = 0.0,
         z: float = 0.0, lm: float | None = -2.0) -> Candidate:
    return Candidate(f"u{i}", "flite", "v", "dates", "a b", "a b", cer, lm,
                     Signal(clipping, silence, 1.0, 10.0), z)


def test_filter_removes_each_failure_with_its_reason_then_ranks_by_cer() -> None:
    cands = [cand(0, 0.1), cand(1, 0.9), cand(2, 0.0, silence=0.9), cand(3, 0.2, clipping=0.01),
             cand(4, 0.05, z=-5.0), cand(5, 0.3), cand(6, 0.0, lm=-9.0), cand(7, 0.2)]
    kept, removed = filter_pool(cands, RefineConfig())
    assert removed == {"u1": ["cer"], "u2": ["silence"], "u3": ["clipping"], "u4": ["rate"]}
    assert kept == ["u6", "u0", "u7", "u5"]  # lowest CER first
    kept, removed = filter_pool(cands, RefineConfig(min_lm_logprob=-5.0, keep=0.25))
    assert removed["u6"] == ["lm"]
    assert kept == ["u0", "u7"]  # 0.25 x 8; u5 is cut by rank
    assert removed["u5"] == ["rank"]
    with pytest.raises(ValueError, match="--keep"):
        filter_pool(cands, RefineConfig(keep=1.5))


def test_refine_command_removes_planted_bad_candidates(tiny_corpus, tmp_path) -> None:  # noqa: F811
    """A tiny flite corpus plus two planted candidates: one whose text is not what was spoken
    (round-trip CER) and one that is mostly silence. The shipped model scores them; both are
    removed for the right reason; the report's groups add up and the kept cuts are written."""
    from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

    cuts = CutSet.from_file(tiny_corpus / "cuts_train.jsonl.gz").to_eager()
    first = next(iter(cuts))
    audio = first.load_audio()[0]
    planted = []
    for name, wave, text in (("wrongtext", audio, "zebra quartz vexing jumpy wolf"),
                             ("silent", np.concatenate([audio, np.zeros(audio.size * 4)]),
                              first.supervisions[0].text)):
        path = tmp_path / f"{name}.wav"
        sf.write(path, wave, 16000)
        rec = Recording.from_file(path, recording_id=name)
        sup = SupervisionSegment(name, name, 0.0, rec.duration, text=text,
                                 speaker=first.supervisions[0].speaker,
                                 custom=first.supervisions[0].custom)
        planted.append(MonoCut(name, 0.0, rec.duration, 0, recording=rec, supervisions=[sup]))
    pool = tmp_path / "pool.jsonl.gz"
    CutSet.from_cuts(list(cuts) + planted).to_file(pool)
    out = tmp_path / "kept.jsonl.gz"
    subprocess.run([sys.executable, "-m", "clients.cli", "data", "refine", "--pool", str(pool),
                    "--out", str(out), "--no-progress"], cwd=ROOT, check=True, timeout=300)
    rep = json.loads((tmp_path / "kept.report.json").read_text())
    assert rep["pool"] == len(cuts) + 2 and rep["kept"] + rep["removed"] == rep["pool"]
    removed = {e["id"]: e["reasons"] for e in rep["examples"]}
    assert "cer" in removed["wrongtext"] and "silence" in removed["silent"]
    assert rep["scores"]["wrongtext"]["cer"] > rep["scores"][first.id]["cer"]
    assert rep["scores"]["silent"]["silence"] > 0.7
    assert sum(g["removed"] for g in rep["by_engine"].values()) == rep["removed"]
    kept_ids = {c.id for c in CutSet.from_file(out)}
    assert len(kept_ids) == rep["kept"] and not {"wrongtext", "silent"} & kept_ids
    assert rep["lm"] is True  # the shipped bundle's LM scored the texts
    assert "| removed (worst CER)" in (tmp_path / "kept.report.md").read_text()
