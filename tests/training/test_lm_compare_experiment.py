"""The LM comparison command, tiny: every row scored on every set, LSTM and TCNLM at equal
parameters."""

import gzip
import json

from training.experiments.lm_compare import main


def test_rows_sets_and_equal_parameters(tmp_path, dialogues) -> None:
    corpus = tmp_path / "c"
    corpus.mkdir()
    for split, texts in (("dev", ["set an alarm for seven", "what is the meaning of it"]),
                         ("test", ["play some music", "what time is it"])):
        with gzip.open(corpus / f"cuts_{split}.jsonl.gz", "wt") as f:
            for t in texts:
                f.write(json.dumps({"supervisions": [{"text": t}]}) + "\n")
    out = tmp_path / "r"
    assert main(["--corpus", str(corpus), "--dialogues", str(dialogues),
                 "--no-corpus-text", "--max-steps", "5", "--minutes", "2", "--embed", "32",
                 "--hidden", "64", "--topics", "4", "--bow-size", "100", "--ntm-hidden", "32",
                 "--work", str(tmp_path / "w"), "--out", str(out), "--no-progress"]) == 0
    r = json.loads(out.with_suffix(".json").read_text())
    rows = {row["model"]: row for row in r["rows"]}
    assert set(rows) == {"3-gram (Kneser-Ney)", "lstm", "tcnlm"}
    for row in rows.values():
        for s in ("dev", "test", "dialogues", "dialogues_no_context"):
            assert row[s]["perplexity"] > 1 and row[s]["tokens"] > 0
    assert abs(rows["tcnlm"]["params"] - rows["lstm"]["params"]) <= 0.01 * rows["lstm"]["params"]
    assert len(r["topics"]) == 4
    assert "| tcnlm |" in out.with_suffix(".md").read_text()
