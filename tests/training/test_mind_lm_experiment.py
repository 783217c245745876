"""The MIND LM comparison, tiny: both texts at the same token budget, scored on held-out turns."""

import json

from training.experiments.mind_lm import main


def test_equal_token_budgets_and_held_out_turns(tmp_path) -> None:
    out = tmp_path / "m"
    assert main(["--count", "200", "--template-sentences", "50", "--tokens", "8000",
                 "--out", str(out)]) == 0
    r = json.loads(out.with_suffix(".json").read_text())
    rows = {row["text"]: row for row in r["rows"]}
    assert set(rows) == {"raw", "raw+dialogues"}
    for row in rows.values():
        assert 7500 <= row["tokens"] <= 8000  # the budget, give or take the last sentence
        assert row["dialogue_test_turns"]["tokens"] > 0
    assert rows["raw"]["dialogue_tokens"] == 0 < rows["raw+dialogues"]["dialogue_tokens"]
    assert r["dialogues"]["test"] > 0
