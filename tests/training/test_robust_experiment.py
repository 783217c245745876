"""The robust-encoder comparison command end to end on a tiny corpus: the CTC model's reference
row and trained rows (corrupted views; + L1 + GAN) scored on the clean set and every corrupted
copy, rows merged across calls."""

from __future__ import annotations

import json

import pytest

from tests.training.test_train import tiny_corpus  # noqa: F401 (fixture)
from training.data.corrupt import corrupt_manifest
from training.experiments.robust import SETS, main


def test_rows_score_every_set_and_merge(tiny_corpus, tmp_path) -> None:  # noqa: F811
    clean = str(tiny_corpus / "cuts_dev.jsonl.gz")
    corrupted = tmp_path / "corrupt"
    for key, _ in SETS:
        kind = key.rstrip("0123456789") if key != "farfield20" else "farfield"
        snr = float(key[len(kind):] or 10)
        corrupt_manifest(clean, str(corrupted), kind, snr_db=snr, limit=3, progress=False)
    out = tmp_path / "table"
    common = ["--corpus", str(tiny_corpus), "--test", clean, "--corrupt-dir", str(corrupted),
              "--limit", "3", "--work", str(tmp_path / "work"), "--out", str(out),
              "--no-progress", "--minutes", "0.15",
              "--override", "data.max_duration_s=20", "--override", "data.num_workers=0",
              "--override", "robust.rir_bank=2", "--override", "optim.val_every_steps=4",
              "--override", "data.dev_max_cuts=3"]
    assert main([*common, "--only", "shipped,both"]) == 0
    assert main([*common, "--only", "aug"]) == 0  # merged in, in variant order
    result = json.loads(out.with_suffix(".json").read_text())
    assert [r["run"] for r in result["runs"]] == ["shipped", "aug", "both"]
    for r in result["runs"]:
        assert set(r["sets"]) == {"clean", *(k for k, _ in SETS)}
        for key, s in r["sets"].items():
            assert s["utterances"] == r["sets"]["clean"]["utterances"] >= 2
            assert 0 <= s["cer_greedy"] and 0 <= s["wer_beam_lm"]
            assert (key == "clean") != (s.get("embedding_distance", -1) > 0)
    rows = {r["run"]: r for r in result["runs"]}
    assert rows["shipped"]["steps"] == 0 and rows["both"]["steps"] > 0
    assert "robust.gan_weight=0.3" in rows["both"]["overrides"]
    assert "| both |" in out.with_suffix(".md").read_text()
    with pytest.raises(SystemExit, match="minutes_per_run"):
        main([*common, "--minutes", "0.2", "--only", "shipped"])
