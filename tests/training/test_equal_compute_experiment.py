"""The equal-compute comparison command end to end on a tiny corpus (seconds per run)."""

from __future__ import annotations

import json

import pytest

from tests.training.test_train import overrides, tiny_corpus  # noqa: F401 (fixture)
from training.experiments.equal_compute import main, parse


def test_variant_names() -> None:
    v = parse("sw500-rnnt_pruned-x8-conformer")
    assert (v.units, v.head, v.stride, v.arch) == (500, "rnnt_pruned", 8, "conformer")
    assert "head.rnnt_loss=pruned" in v.overrides() and "head.subword_vocab=500" in v.overrides()
    assert parse("char-ctc-x4").overrides() == ["model.subsampling=4", "head.type=ctc"]
    with pytest.raises(SystemExit, match="UNITS-HEAD-xSTRIDE"):
        parse("ctc-x4")


def test_table_rows_merge_and_validity(tiny_corpus, tmp_path) -> None:  # noqa: F811
    small = [o for o in overrides(tiny_corpus, tmp_path, 30)
             if o.split("=")[0].split(".")[0] in ("model", "augment", "data")
             and not o.startswith(("data.train", "data.dev"))]
    out = tmp_path / "table"
    common = ["--corpus", str(tiny_corpus), "--test", str(tiny_corpus / "cuts_dev.jsonl.gz"),
              "--work", str(tmp_path / "work"), "--out", str(out), "--no-progress",
              "--dev-limit", "4", "--override", "optim.val_every_steps=20",
              *sum((["--override", o] for o in small), [])]
    assert main([*common, "--minutes", "0.1", "--only", "char-ctc-x4,char-ctc-x8"]) == 0
    assert main([*common, "--minutes", "0.1", "--only", "sw40-ctc-x4"]) == 0  # merged in
    result = json.loads(out.with_suffix(".json").read_text())
    runs = {r["run"]: r for r in result["runs"]}
    assert set(runs) == {"char-ctc-x4", "sw40-ctc-x4"}, runs  # characters at 80 ms: too dense
    assert result["validity"]["char-ctc-x8"].startswith("invalid")
    assert result["validity"]["sw40-ctc-x4"].startswith("valid")
    assert runs["sw40-ctc-x4"]["vocab"] == 40 and runs["char-ctc-x4"]["vocab"] == 29
    for r in runs.values():
        assert r["steps"] > 0 and r["params"] > 0 and r["streams_per_core"] >= 0
        assert 0 <= r["test_cer_greedy"] and 0 <= r["test_cer_beam_lm"] and r["rtf_beam_lm"] > 0
    assert "| sw40-ctc-x4 |" in out.with_suffix(".md").read_text()
    with pytest.raises(SystemExit, match="minutes_per_run"):
        main([*common, "--minutes", "0.2", "--only", "char-ctc-x4"])
