"""The filter-rounds command end to end on a tiny corpus (a few training steps per row)."""

from __future__ import annotations

import json
import random

from tests.training.test_train import experiment_overrides, tiny_corpus  # noqa: F401 (fixture)
from training.experiments.refine_rounds import main


def test_three_rows_of_equal_size_and_what_each_filter_removed(tiny_corpus, tmp_path) -> None:  # noqa: F811
    from lhotse import CutSet

    small = experiment_overrides(tiny_corpus, tmp_path, 10)
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


def test_warm_started_rows_fine_tune_one_bundle_on_a_drawn_pool(tiny_corpus, tmp_path) -> None:  # noqa: F811
    """--init-from B: an `init` row scores B itself, and every row is fine-tuned from B;
    --pool-limit N: the candidates are N drawn at random (--seed) from the pool, so each row
    holds keep * N of those."""
    from lhotse import CutSet

    small = experiment_overrides(tiny_corpus, tmp_path, 10)
    common = ["--corpus", str(tiny_corpus), "--keep", "0.5", "--minutes", "0.05",
              "--test", str(tiny_corpus / "cuts_dev.jsonl.gz"), "--no-progress",
              "--override", "optim.max_steps=5", "--override", "optim.val_every_steps=5",
              *sum((["--override", o] for o in small), [])]
    assert main([*common, "--work", str(tmp_path / "w0"), "--out", str(tmp_path / "rr0")]) == 0
    init = next((tmp_path / "w0" / "filtered").rglob("bundle.json")).parent
    out = tmp_path / "rr"
    assert main([*common, "--init-from", str(init), "--scorer", str(init), "--pool",
                 str(tiny_corpus / "cuts_train.jsonl.gz"), "--pool-limit", "6", "--seed", "1",
                 "--work", str(tmp_path / "w"), "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    rows = {r["run"]: r for r in result["rows"]}
    assert list(rows) == ["init", "unfiltered", "filtered", "round2"]
    assert rows["init"]["utterances"] == 0 and result["pool"] == 6
    assert {rows[n]["utterances"] for n in ("unfiltered", "filtered", "round2")} == {3}
    ids = [c.id for c in CutSet.from_file(tiny_corpus / "cuts_train.jsonl.gz")]
    drawn = set(random.Random(1).sample(ids, 6))
    assert drawn != set(ids[:6])  # so the check below tells a draw from the first six
    for name in ("unfiltered", "filtered", "round2"):
        cfg = json.loads(next((tmp_path / "w" / name).rglob("bundle.json")).read_text())
        assert cfg["provenance"]["config"]["init_from"] == str(init)
        assert {c.id for c in CutSet.from_file(tmp_path / "w" / name / "train.jsonl.gz")} <= drawn
    assert f"from {init}" in out.with_suffix(".md").read_text()
