"""`chorus data synth-dialogues`: two voices per dialogue, turn by turn, splits kept (the
conversational test set is spoken by voices never heard in training)."""

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_dialogues_are_spoken_by_two_voices_of_their_own_split(tmp_path, dialogues) -> None:
    from lhotse import CutSet

    src = dialogues
    records = [json.loads(x) for x in src.read_text().splitlines()]
    # the first 10 dialogues plus the first test one, so the test split is never empty
    first_test = next(i for i, r in enumerate(records) if r["split"] == "test")
    limit = max(10, first_test + 1)
    subprocess.run([sys.executable, "-m", "clients.cli", "data", "synth-dialogues",
                    "--dialogues", str(src), "--out", str(tmp_path / "s"), "--limit", str(limit),
                    "--engines", "flite,espeak-ng", "--jobs", "2", "--no-progress"],
                   cwd=ROOT, check=True, capture_output=True, timeout=300)
    want = {r["id"]: r for r in records[:limit]}
    voices_by_split = json.loads((tmp_path / "s/stats.json").read_text())
    assert voices_by_split["dialogues"] == limit and voices_by_split["failures"] == 0
    speakers: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    split_voices: dict[str, set[str]] = defaultdict(set)
    for split in ("train", "dev", "test"):
        for cut in CutSet.from_file(tmp_path / f"s/cuts_{split}.jsonl.gz"):
            sup = cut.supervisions[0]
            rec = want[sup.custom["dialogue"]]
            assert rec["split"] == split and sup.custom["style"] == rec["style"]
            turn = rec["turns"][sup.custom["turn"]]
            assert sup.text == turn["text"] and sup.custom["role"] == turn["speaker"]
            assert sup.custom["domain"] == "dialogue" and cut.duration > 0.3
            speakers[rec["id"]][turn["speaker"]].add(sup.speaker)
            split_voices[split].add(sup.speaker)
    assert set(speakers) == set(want)
    for roles in speakers.values():  # one voice per role, two different voices
        assert {len(v) for v in roles.values()} == {1} and len(set().union(*roles.values())) == 2
    assert split_voices["test"] and not split_voices["test"] & split_voices["train"]
