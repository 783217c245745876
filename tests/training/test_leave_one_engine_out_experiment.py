"""The leave-one-engine-out command end to end on a tiny two-engine corpus (seconds per run)."""

from __future__ import annotations

import json

import pytest

from tests.training.test_train import overrides
from training.data.synth.corpus import SynthConfig, synthesize_corpus
from training.experiments.leave_one_engine_out import main, without_engine


@pytest.fixture(scope="module")
def two_engines(tmp_path_factory):
    out = tmp_path_factory.mktemp("two")
    synthesize_corpus(SynthConfig(out=out, hours=0.02, seed=3, jobs=2,
                                  engines=("flite", "espeak-ng"),
                                  engine_weights={"flite": 0.5, "espeak-ng": 0.5},
                                  split_weights={"train": 0.7, "dev": 0.15, "test": 0.15}),
                      progress=False)
    return out


def test_the_left_out_engine_is_gone_from_train_and_dev_only(two_engines, tmp_path) -> None:
    from lhotse import CutSet

    path, kept, dropped = without_engine(two_engines / "cuts_train.jsonl.gz", "flite",
                                         tmp_path / "t.jsonl.gz")
    engines = {c.supervisions[0].custom["engine"] for c in CutSet.from_file(path)}
    assert engines == {"espeak-ng"} and kept > 0 and dropped > 0
    assert without_engine(two_engines / "cuts_train.jsonl.gz", None,
                          tmp_path / "all.jsonl.gz")[1:] == (kept + dropped, 0)


def test_table_sets_the_left_out_engine_beside_the_reference(two_engines, tmp_path) -> None:
    small = [o for o in overrides(two_engines, tmp_path, 30)
             if o.split("=")[0].split(".")[0] in ("model", "augment", "data")
             and not o.startswith(("data.train", "data.dev"))]
    out = tmp_path / "table"
    common = ["--corpus", str(two_engines), "--work", str(tmp_path / "work"), "--out", str(out),
              "--no-progress", "--dev-limit", "4", "--minutes", "0.1",
              "--override", "optim.val_every_steps=20", *sum((["--override", o] for o in small), [])]
    assert main([*common, "--only", "none"]) == 0
    assert main([*common, "--only", "flite"]) == 0  # merged in
    result = json.loads(out.with_suffix(".json").read_text())
    runs = {r["run"]: r for r in result["runs"]}
    assert set(runs) == {"none", "flite"}
    assert runs["flite"]["left_out"] == "flite" and runs["flite"]["dropped_utterances"] > 0
    assert runs["none"]["train_utterances"] == (runs["flite"]["train_utterances"]
                                                + runs["flite"]["dropped_utterances"])
    for r in runs.values():  # the whole test split, per engine, both decoders
        assert {"flite", "espeak-ng", "all"} <= set(r["greedy"]) and r["steps"] > 0
        assert 0 <= r["beam_lm"]["flite"]["cer"]
    assert "| flite |" in out.with_suffix(".md").read_text()
    out.with_suffix(".md").unlink()
    assert main([*common, "--render"]) == 0  # the table again from its JSON, no training
    assert "| flite |" in out.with_suffix(".md").read_text()
    with pytest.raises(SystemExit, match="no training utterances"):
        main([*common, "--only", "pico"])


def test_table_compares_a_left_out_engine_with_its_mean_over_the_runs_that_heard_it() -> None:
    """An engine's `heard` figure is the mean over every other run (the reference and the
    other engines' left-out runs), with their range; the gap is left out minus that mean."""
    from training.experiments.leave_one_engine_out import markdown

    def run(name: str, wers: dict[str, float]) -> dict:
        rates = {k: {"wer": w, "cer": w / 2} for k, w in {**wers, "all": 0.5}.items()}
        return {"run": name, "train_utterances": 10, "steps": 5, "date": "d",
                "greedy": rates, "beam_lm": rates}

    table = markdown({"runs": [run("none", {"a": 0.40, "b": 0.50}),
                               run("a", {"a": 0.70, "b": 0.60}),
                               run("b", {"a": 0.50, "b": 0.90})]})
    row_a = next(line for line in table.splitlines() if line.startswith("| a |"))
    # a heard in `none` (40) and `b` (50): mean 45, range 40-50, gap 70 - 45
    assert "| 70.0 / 35.0 | 45.0 / 22.5 | 40.0-50.0 | +25.0 | 2 |" in row_a
    row_b = next(line for line in table.splitlines() if line.startswith("| b |"))
    assert "| 90.0 / 45.0 | 55.0 / 27.5 | 50.0-60.0 | +35.0 | 2 |" in row_b
