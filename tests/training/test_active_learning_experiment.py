"""The active-learning curve command end to end on a tiny corpus (seconds per round)."""

from __future__ import annotations

import json

import pytest

from tests.training.test_train import experiment_overrides, tiny_corpus  # noqa: F401 (fixture)
from training.experiments.active_learning import main, summary


def test_rounds_grow_the_labels_by_the_budget_for_each_method(tiny_corpus, tmp_path) -> None:  # noqa: F811
    from lhotse import CutSet

    small = experiment_overrides(tiny_corpus, tmp_path, 20)
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


def test_warm_start_from_a_bundle_with_no_start_set_chooses_only_from_the_drawn_pool(
        tiny_corpus, tmp_path) -> None:  # noqa: F811
    """--init-from B --start 0: round 0 is B itself (no training, 0 labels); --pool-limit N: every
    method's picks come from the same N utterances drawn for the seed; each run is warm-started
    from B's chain and carries the curve's seed; --replay M --replay-count K: every round trains
    on its labels plus the same K cuts of M."""
    from lhotse import CutSet

    small = experiment_overrides(tiny_corpus, tmp_path, 20)
    common = ["--corpus", str(tiny_corpus), "--seeds", "3", "--minutes", "0.05",
              "--test", str(tiny_corpus / "cuts_dev.jsonl.gz"), "--no-progress",
              "--override", "optim.max_steps=10", "--override", "optim.val_every_steps=10",
              *sum((["--override", o] for o in small), [])]
    # a first trained bundle to start from: round 0 of a one-round curve
    assert main([*common, "--start", "4", "--budget", "1", "--rounds", "1", "--methods",
                 "random", "--work", str(tmp_path / "w0"), "--out", str(tmp_path / "al0")]) == 0
    init = next((tmp_path / "w0" / "s3" / "r0").rglob("bundle.json")).parent
    out = tmp_path / "al"
    assert main([*common, "--start", "0", "--init-from", str(init), "--pool-limit", "5",
                 "--budget", "2", "--rounds", "2", "--methods", "egl,random",
                 "--replay", str(tiny_corpus / "cuts_dev.jsonl.gz"), "--replay-count", "2",
                 "--work", str(tmp_path / "w"), "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["init_from"] == str(init) and result["pool_limit"] == 5
    assert not (tmp_path / "w" / "s3" / "r0").exists()  # round 0 trained nothing
    s = summary(result)
    for pts in s.values():
        assert [p["labels"] for p in pts] == [0, 2, 4]
    picked = {m: {c.id for c in CutSet.from_file(tmp_path / "w" / "s3" / f"{m}-r2"
                                                   / "labelled.jsonl.gz")}
              for m in ("egl", "random")}
    assert all(len(v) == 4 for v in picked.values())
    assert len(picked["egl"] | picked["random"]) <= 5  # one drawn pool of 5 for both methods
    dev = {c.id for c in CutSet.from_file(tiny_corpus / "cuts_dev.jsonl.gz")}
    replays = []
    for m in ("egl", "random"):
        for r in (1, 2):
            trained = {c.id for c in CutSet.from_file(tmp_path / "w" / "s3" / f"{m}-r{r}"
                                                      / "train.jsonl.gz")}
            replays.append(trained & dev)
            assert len(trained) == 2 * r + 2 and len(trained & dev) == 2
    assert all(r == replays[0] for r in replays)  # one replay draw per seed
    def config(run: str) -> dict:
        path = next((tmp_path / "w" / "s3" / run).rglob("bundle.json"))
        return json.loads(path.read_text())["provenance"]["config"]

    assert config("egl-r1")["seed"] == 3 and config("egl-r1")["init_from"] == str(init)
    r1 = next((tmp_path / "w" / "s3" / "egl-r1").rglob("bundle.json")).parent
    assert config("egl-r2")["init_from"] == str(r1)  # each round warm-starts from the last
    with pytest.raises(SystemExit, match="shares cut ids with the pool"):  # replay = the pool
        main([*common, "--start", "0", "--init-from", str(init), "--budget", "2", "--rounds",
              "1", "--replay", str(tiny_corpus / "cuts_train.jsonl.gz"), "--replay-count", "2",
              "--work", str(tmp_path / "w2"), "--out", str(out)])
    with pytest.raises(SystemExit, match="--start >= 1 \\(0 with --init-from\\)"):
        main([*common, "--start", "0", "--budget", "2", "--rounds", "1", "--out", str(out)])


def test_merge_joins_runs_of_other_seeds_and_refuses_other_settings(tmp_path) -> None:
    """--merge: one report from runs on different seeds (rows together, min / max across them);
    a run of other settings or a repeated seed is refused by name."""
    def run(seed: int, wers: list[float], budget: int = 2) -> dict:
        rows = [{"seed": seed, "round": k, "method": "egl", "labels": budget * k, "hours": 0.1 * k,
                 "wer": w} for k, w in enumerate(wers)]
        return {"corpus": "c", "start": 0, "budget": budget, "rounds": len(wers) - 1,
                "minutes_per_round": 0, "seeds": [seed], "test_utterances": 5,
                "date": "2026-12-06", "rows": rows}

    paths = []
    for seed, wers in ((0, [0.5, 0.4]), (1, [0.5, 0.2])):
        paths.append(tmp_path / f"s{seed}.json")
        paths[-1].write_text(json.dumps(run(seed, wers)))
    out = tmp_path / "merged"
    assert main(["--merge", *map(str, paths), "--out", str(out)]) == 0
    merged = json.loads(out.with_suffix(".json").read_text())
    assert merged["seeds"] == [0, 1]
    (r0, r1), = summary(merged).values()
    assert r1["wer"] == pytest.approx(0.3) and (r1["min"], r1["max"]) == (0.2, 0.4)
    (tmp_path / "b.json").write_text(json.dumps(run(2, [0.5, 0.3], budget=3)))
    with pytest.raises(SystemExit, match="differ in .*budget"):
        main(["--merge", str(paths[0]), str(tmp_path / "b.json"), "--out", str(out)])
    with pytest.raises(SystemExit, match="seed is in more than one run"):
        main(["--merge", str(paths[0]), str(paths[0]), "--out", str(out)])
