"""The step-cost command end to end on a tiny corpus: every variant measured on the same
batches, the pruned loss computing fewer joiner cells than the full one."""

from __future__ import annotations

import json

from tests.training.test_train import tiny_corpus  # noqa: F401 (fixture)
from training.experiments.step_cost import main


def test_step_cost_table(tiny_corpus, tmp_path) -> None:  # noqa: F811
    out = tmp_path / "cost"
    small = ["model.d_model=32", "model.num_layers=1", "model.conv_channels=4",
             "head.pred_dim=16", "head.joiner_dim=16", "head.gram_size=10",
             "head.prune_range=3", "data.max_duration_s=6"]
    assert main(["--corpus", str(tiny_corpus), "--batches", "2", "--out", str(out),
                 *sum((["--override", o] for o in small), [])]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    rows = {r["variant"]: r for r in result["rows"]}
    assert set(rows) == {"ctc", "gram_ctc", "rnnt-full", "rnnt-pruned"}
    assert all(r["seconds_per_step"] > 0 and r["steps"] == 2 for r in rows.values())
    assert rows["rnnt-pruned"]["joiner_cells_per_step"] < rows["rnnt-full"]["joiner_cells_per_step"]
    assert "| rnnt-pruned |" in out.with_suffix(".md").read_text()
