"""The transducer comparison command end to end on a tiny corpus (seconds per run)."""

from __future__ import annotations

import json

import pytest

from tests.training.test_train import overrides, tiny_corpus  # noqa: F401 (fixture)
from training.experiments.transducers import main


def test_comparison_table(tiny_corpus, tmp_path) -> None:  # noqa: F811
    small = [o for o in overrides(tiny_corpus, tmp_path, 30)
             if o.split("=")[0].split(".")[0] in ("model", "augment", "data")
             and not o.startswith(("data.train", "data.dev"))]
    out = tmp_path / "table"
    common = ["--corpus", str(tiny_corpus), "--test", str(tiny_corpus / "cuts_dev.jsonl.gz"),
              "--strides", "4,8", "--gram-size", "20", "--work", str(tmp_path / "work"),
              "--out", str(out), "--no-progress", "--override", "optim.val_every_steps=20",
              "--override", "head.pred_dim=32", "--override", "head.joiner_dim=32",
              *sum((["--override", o] for o in small), [])]
    assert main([*common, "--minutes", "0.1"]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    runs = {r["run"]: r for r in result["runs"]}
    assert "rnnt-x4" in runs and "rnnt-x8" in runs and "ctc-x4" in runs
    assert "rnnt_pruned-x4" in runs
    assert result["validity"]["ctc-x8"].startswith("invalid")  # characters at 80 ms: too dense
    for r in runs.values():
        assert r["steps"] > 0 and 0 <= r["test_cer"] and r["params"] > 0 and r["decode_rtf"] > 0
    table = out.with_suffix(".md").read_text()
    assert "| ctc-x4 | 40 ms |" in table and "RNN-T beats CTC" in table

    # --merge re-runs one row and keeps the others; a different budget is refused
    before = {r["run"]: r for r in result["runs"]}
    assert main([*common, "--minutes", "0.1", "--only", "ctc-x4", "--merge"]) == 0
    after = {r["run"]: r for r in json.loads(out.with_suffix(".json").read_text())["runs"]}
    assert set(after) == set(before) and after["rnnt-x8"] == {**before["rnnt-x8"],
                                                                "date": result["date"]}
    assert after["ctc-x4"]["bundle"] == before["ctc-x4"]["bundle"]  # same place, new run
    with pytest.raises(SystemExit, match="minutes_per_run"):
        main([*common, "--minutes", "0.2", "--only", "ctc-x4", "--merge"])
