"""The filter-rounds command end to end on a tiny corpus (a few training steps per row)."""

from __future__ import annotations

import json

from tests.training.test_train import overrides, tiny_corpus  # noqa: F401 (fixture)
from training.experiments.refine_rounds import main


def test_three_rows_of_equal_size_and_what_each_filter_removed(tiny_corpus, tmp_path) -> None:  # noqa: F811
    from lhotse import CutSet

    small = [o for o in overrides(tiny_corpus, tmp_path, 10)
             if o.split("=")[0].split(".")[0] in ("model", "augment", "data")
             and not o.startswith(("data.train", "data.dev"))]
    out = tmp_path / "rr"
    assert main(["--corpus", str(tiny_corpus), "--keep", "0.5", "--minutes", "0.05",
                 "--test", str(tiny_corpus / "cuts_dev.jsonl.gz"), "--work", str(tmp_path / "w"),
                 "--out", str(out), "--no-progress", "--override", "optim.max_steps=10",
                 "--override", "optim.val_every_steps=10",
                 *sum((["--override", o] for o in small), [])]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    pool = len(CutSet.from_file(tiny_corpus / "cuts_train.jsonl.gz"))
    rows = {r["run"]: r for r in result["rows"]}
    assert list(rows) == ["unfiltered", "filtered", "round2"]
    sizes = {r["utterances"] for r in rows.values()}
    assert len(sizes) == 1 and sizes.pop() <= round(0.5 * pool)  # equal size, at most keep
    assert rows["filtered"]["overlap_with_filtered"] == 1.0
    for name in ("unfiltered", "filtered", "round2"):
        got = {c.id for c in CutSet.from_file(tmp_path / "w" / name / "train.jsonl.gz")}
        assert len(got) == rows[name]["utterances"]
    for name in ("filtered", "round2"):
        rep = result["reports"][name]
        assert rep["kept"] + rep["removed"] == pool
        assert sum(g["removed"] for g in rep["by_domain"].values()) == rep["removed"]
    assert "| round2 |" in out.with_suffix(".md").read_text()
