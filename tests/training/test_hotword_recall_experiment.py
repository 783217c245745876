"""The oracle-hotword command end to end with the CTC model (its default bundle) on a tiny synthetic split:
every (floor, boost) row is scored, and naming the reference words as hotwords finds more of
them than decoding without."""

from __future__ import annotations

import gzip
import json

import pytest

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


def test_an_rnnt_bundle_is_refused_by_name(tiny_corpus, tmp_path) -> None:  # noqa: F811
    """The token floors are the CTC prefix beam's: an RNN-T bundle gets a clear refusal."""
    from tests.models.test_cli import tiny_bundle

    rnnt = tiny_bundle(tmp_path / "rnnt", head="rnnt")
    with pytest.raises(SystemExit, match="a rnnt bundle; hotword floors are the CTC prefix"):
        main(["--bundle", str(rnnt), "--manifest", str(tiny_corpus / "cuts_train.jsonl.gz"),
              "--out", str(tmp_path / "o"), "--no-progress"])
