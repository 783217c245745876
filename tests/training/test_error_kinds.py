"""training.eval.error_kinds: word errors split into non-word / real-word substitutions and
insertions and deletions, as WER points that add up to the WER."""

from __future__ import annotations

import json

from training.eval.error_kinds import as_points, error_kinds, main
from training.eval.metrics import error_rates

VOCAB = {"the", "cat", "sat", "on", "mat", "a", "hat"}


def test_each_error_is_counted_once_by_its_kind() -> None:
    refs = ["the cat sat on the mat", "a cat"]
    hyps = ["the kat sat on a mat mat", "cat"]  # kat: non-word; a for the: word; mat: insertion
    c = error_kinds(refs, hyps, VOCAB)
    assert (c["sub_nonword"], c["sub_word"], c["deletion"], c["ins_word"], c["ins_nonword"]) \
        == (1, 1, 1, 1, 0)
    assert c["words"] == 8
    row = as_points(c)
    assert row["wer"] == round(100 * error_rates(refs, hyps).wer, 1) == 50.0


def test_command_reads_an_eval_json_per_engine(tmp_path) -> None:
    (tmp_path / "vocab.txt").write_text("\n".join(sorted(VOCAB)))
    hyps = [{"id": "1", "engine": "flite", "ref": "the cat", "chorus": "the kat"},
            {"id": "2", "engine": "pico", "ref": "a hat", "chorus": "a hat hat"}]
    (tmp_path / "e.json").write_text(json.dumps({"hypotheses": hyps}))
    assert main(["--eval-json", str(tmp_path / "e.json"), "--vocab", str(tmp_path / "vocab.txt"),
                 "--json", str(tmp_path / "k.json"), "--markdown", str(tmp_path / "k.md")]) == 0
    r = json.loads((tmp_path / "k.json").read_text())["results"]["e"]
    assert r["flite"]["sub_nonword"] == 50.0 and r["pico"]["ins_word"] == 50.0
    assert r["all"]["wer"] == 50.0 and "| e | pico | 50.0 |" in (tmp_path / "k.md").read_text()
