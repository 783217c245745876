"""The oracle-hotword command end to end with the shipped model on a tiny synthetic split:
every (floor, boost) row is scored, and naming the reference words as hotwords finds more of
them than decoding without."""

from __future__ import annotations

import gzip
import json

from tests.training.test_train import tiny_corpus  # noqa: F401 (fixture)
from training.experiments.hotword_recall import main


def test_oracle_hotwords_raise_recall(tiny_corpus, tmp_path) -> None:  # noqa: F811
    manifest = tiny_corpus / "cuts_train.jsonl.gz"
    out = tmp_path / "hot"
    assert main(["--manifest", str(manifest), "--domain", "*", "--floors", "1e-4,1e-3",
                 "--boosts", "0,4", "--beam-size", "4", "--out", str(out),
                 "--no-progress"]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    rows = {(r["hotword_token_floor"], r["boost"]): r for r in result["rows"]}
    assert set(rows) == {(1e-4, 0.0), (1e-4, 4.0), (1e-3, 0.0), (1e-3, 4.0)}
    with gzip.open(manifest, "rt") as f:
        assert result["utterances"] == sum(1 for _ in f)
    plain, boosted = rows[(1e-4, 0.0)]["word_recall"], rows[(1e-4, 4.0)]["word_recall"]
    assert boosted > plain or plain == boosted == 1.0
    assert rows[(1e-4, 0.0)] == {**rows[(1e-3, 0.0)], "hotword_token_floor": 1e-4}  # no hotwords
    assert "| 0.0001 | 4 |" in out.with_suffix(".md").read_text()
