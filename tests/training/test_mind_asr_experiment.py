"""MIND's ASR half end to end on tiny corpora (a few fine-tuning steps per row)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.test_train import experiment_overrides, overrides, tiny_corpus  # noqa: F401 (fixture)
from training.experiments.mind_asr import main

ROOT = Path(__file__).parents[2]


def test_rows_fine_tune_equal_hours_raw_vs_dialogue_mix(tiny_corpus, dialogues, tmp_path) -> None:  # noqa: F811
    """init / raw / raw+dialogues: both trained rows hold at least --hours of audio, the mixed
    one about --dialogue-share of it from the dialogue corpus's train split and the raw one
    none; both start from --init-from; each row is scored on both test splits."""
    from lhotse import CutSet

    from training.config import load_config
    from training.eval.run import load_manifest
    from training.experiments import greedy_wer
    from training.train import train

    records = [json.loads(x) for x in dialogues.read_text().splitlines()]
    limit = max(12, next(i for i, r in enumerate(records) if r["split"] == "test") + 1)
    subprocess.run([sys.executable, "-m", "clients.cli", "data", "synth-dialogues",
                    "--dialogues", str(dialogues), "--out", str(tmp_path / "dlg"), "--limit",
                    str(limit), "--engines", "flite,espeak-ng", "--jobs", "2", "--no-progress"],
                   cwd=ROOT, check=True, capture_output=True, timeout=300)
    init = train(load_config(None, overrides(tiny_corpus, tmp_path / "init", 5)), progress=False)
    small = experiment_overrides(tiny_corpus, tmp_path, 5,
                                 ("model", "augment", "data", "optim"))
    out = tmp_path / "mind-asr"
    common = ["--corpus", str(tiny_corpus), "--dialogues", str(tmp_path / "dlg"),
              "--corpus-test", str(tiny_corpus / "cuts_dev.jsonl.gz"),  # the tiny one has no test
              "--init-from", str(init), "--work", str(tmp_path / "w"), "--out", str(out),
              "--no-progress", *sum((["--override", o] for o in small), [])]
    assert main([*common, "--hours", "0.004", "--dialogue-share", "0.5"]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    rows = {r["run"]: r for r in result["rows"]}
    assert list(rows) == ["init", "raw", "raw+dialogues"]
    assert rows["init"]["utterances"] == 0
    dlg_test = load_manifest(tmp_path / "dlg" / "cuts_test.jsonl.gz")
    assert rows["init"]["dialogue_test"] == greedy_wer(init, dlg_test)  # scored on that split
    assert result["test_utterances"]["dialogue_test"] == len(dlg_test)
    for name in ("raw", "raw+dialogues"):
        assert rows[name]["hours"] >= 0.004 * 0.99
        assert all(math.isfinite(rows[name][k]) for k in ("dialogue_test", "corpus_test"))
        run_dir = tmp_path / "w" / name.replace("+", "-")
        cfg = json.loads(next(run_dir.rglob("bundle.json")).read_text())
        assert cfg["provenance"]["config"]["init_from"] == str(init)
    assert rows["raw"]["dialogue_hours"] == 0
    assert 0.002 * 0.99 <= rows["raw+dialogues"]["dialogue_hours"] < 0.004
    dlg_ids = {c.id for c in CutSet.from_file(tmp_path / "dlg" / "cuts_train.jsonl.gz")}
    mixed = {c.id for c in CutSet.from_file(tmp_path / "w" / "raw-dialogues" / "train.jsonl.gz")}
    assert mixed & dlg_ids and mixed - dlg_ids
    assert "| raw+dialogues |" in out.with_suffix(".md").read_text()
    with pytest.raises(SystemExit, match="only .* h to draw from"):
        main([*common, "--hours", "5"])
