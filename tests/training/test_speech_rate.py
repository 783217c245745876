"""training.eval.speech_rate: sox's tempo stretch keeps pitch and scales duration, and the
measurement's tempo-1 row is `chorus eval --decoder greedy` on the same utterances."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.eval.speech_rate import main, stretch


def _peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spec) * 16_000 / x.size)


def test_stretch_changes_duration_and_keeps_pitch() -> None:
    """A 440 Hz tone at tempo 0.8 lasts 1.25 times as long and stays at 440 Hz (resampling,
    the `speed` augmentation, would move it to 352 Hz); tempo 1 is the audio untouched; a
    factor outside [0.5, 2] is refused by name."""
    t = np.arange(16_000) / 16_000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    slow = stretch(tone, 0.8)
    assert abs(slow.size / tone.size - 1.25) < 0.02
    assert abs(_peak_hz(slow[2000:-2000]) - 440) < 5
    assert abs(_peak_hz(stretch(tone, 1.25)[1000:-1000]) - 440) < 5
    assert stretch(tone, 1.0) is tone
    with pytest.raises(ValueError, match="tempo factor must be in"):
        stretch(tone, 3.0)


def test_tempo_one_is_greedy_eval_and_slower_speech_gets_more_frames(tmp_path) -> None:
    """On synthesized held-out speech with the CTC bundle (the command's default): the tempo-1 hypotheses are
    exactly `evaluate(decoder="greedy")`'s, tempo 0.8 gives 1.25x the output frames, and the
    density table covers every utterance by engine."""
    from models.bundle import CTC_BUNDLE
    from training.data.synth.corpus import SynthConfig, synthesize_corpus
    from training.eval.run import evaluate

    synthesize_corpus(SynthConfig(out=tmp_path / "c", hours=0.01, seed=2, jobs=2,
                                  engines=("flite", "espeak-ng"),
                                  split_weights={"train": 0.0, "dev": 0.0, "test": 1.0}),
                      progress=False)
    manifest = tmp_path / "c/cuts_test.jsonl.gz"
    assert main(["--manifest", str(manifest), "--tempo", "1.0,0.8", "--no-progress",
                 "--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md")]) == 0
    r = json.loads((tmp_path / "r.json").read_text())
    ref = evaluate(CTC_BUNDLE, manifest, decoder="greedy", progress=False)
    assert r["tempos"]["1.0"]["hypotheses"] == [h["chorus"] for h in ref["hypotheses"]]
    assert r["tempos"]["1.0"]["overall"]["wer"] == ref["systems"]["chorus"]["overall"]["wer"]
    ratio = r["tempos"]["0.8"]["output_frames"] / r["tempos"]["1.0"]["output_frames"]
    assert 1.2 < ratio < 1.3
    q = r["density_quartiles"]
    n = r["utterances"]
    assert n >= 4 and q["all"]["utterances"] == n
    assert sum(g["utterances"] for e, g in q.items() if e != "all") == n
    assert 0.1 < q["all"]["median_density"] < 1.0
    md = (tmp_path / "r.md").read_text()
    assert "| 0.8 |" in md and "| all |" in md
