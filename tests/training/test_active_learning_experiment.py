"""The active-learning curve command end to end on a tiny corpus (seconds per round)."""

from __future__ import annotations

import json

from tests.training.test_train import overrides, tiny_corpus  # noqa: F401 (fixture)
from training.experiments.active_learning import main, summary


def test_rounds_grow_the_labels_by_the_budget_for_each_method(tiny_corpus, tmp_path) -> None:  # noqa: F811
    from lhotse import CutSet

    small = [o for o in overrides(tiny_corpus, tmp_path, 20)
             if o.split("=")[0].split(".")[0] in ("model", "augment", "data")
             and not o.startswith(("data.train", "data.dev"))]
    out = tmp_path / "al"
    assert main(["--corpus", str(tiny_corpus), "--start", "4", "--budget", "2", "--rounds", "2",
                 "--seeds", "0", "--methods", "egl,random", "--minutes", "0.05",
                 "--test", str(tiny_corpus / "cuts_dev.jsonl.gz"), "--work", str(tmp_path / "w"),
                 "--out", str(out), "--no-progress", "--override", "optim.max_steps=15",
                 "--override", "optim.val_every_steps=15",
                 *sum((["--override", o] for o in small), [])]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    s = summary(result)
    assert set(s) == {"egl", "random"}
    for pts in s.values():
        assert [p["labels"] for p in pts] == [4, 6, 8]
        assert all(0 <= p["wer"] for p in pts)
    # each round's training manifest holds exactly what was labelled, the previous round's too
    for m in ("egl", "random"):
        r1 = {c.id for c in CutSet.from_file(tmp_path / "w" / "s0" / f"{m}-r1" / "labelled.jsonl.gz")}
        r2 = {c.id for c in CutSet.from_file(tmp_path / "w" / "s0" / f"{m}-r2" / "labelled.jsonl.gz")}
        assert len(r1) == 6 and len(r2) == 8 and r1 < r2
    assert out.with_suffix(".png").stat().st_size > 1000
    assert "| egl |" in out.with_suffix(".md").read_text()
