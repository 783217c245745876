"""The learning-curve command: chained runs laid end to end, both laws fitted and solved."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from training.experiments.learning_curve import chain, extrapolate, main


def provenance(wers: list[float], seconds: float = 3600.0, world: list[int] | None = None) -> dict:
    world = world or [1] * len(wers)
    runs = [{"recipe": f"r{i}", "steps": 1000, "world_size": w, "train_seconds": seconds,
             "best_dev_wer": x} for i, (x, w) in enumerate(zip(wers, world, strict=True))]
    last = dict(runs[-1], config={"data": {"max_duration_s": 100}}, history=runs[:-1])
    return last


def test_chain_accumulates_core_hours_and_audio() -> None:
    points = chain(provenance([0.6, 0.5, 0.45], world=[1, 2, 2]))
    assert [p.core_hours for p in points] == [1.0, 3.0, 5.0]
    assert [p.audio_hours for p in points] == pytest.approx([27.8, 83.3, 138.9], abs=0.1)
    assert [p.recipe for p in points] == ["r0", "r1", "r2"]


def test_a_power_law_is_recovered_and_solved() -> None:
    # WER = 0.6 c^-0.25 at c = 1, 2, 4 core-hours: 15 % is met at c = 4^4 = 256
    wers = [0.6 * c ** -0.25 for c in (1, 2, 4)]
    fits = extrapolate(chain(provenance(wers, world=[1, 1, 2])), 0.15)
    assert fits["power_law"]["b"] == pytest.approx(-0.25, abs=1e-3)
    assert fits["power_law"]["core_hours_to_target"] == pytest.approx(256, rel=1e-2)
    assert fits["power_law"]["times_spent_so_far"] == pytest.approx(64, rel=1e-2)
    # the log-linear law falls faster at first, so it reaches the target sooner here
    assert fits["log_linear"]["core_hours_to_target"] < 256


def test_a_flat_curve_never_reaches_the_target_and_bad_chains_are_named() -> None:
    fits = extrapolate(chain(provenance([0.5, 0.5, 0.5], world=[1, 2, 4])), 0.15)
    assert math.isinf(fits["log_linear"]["core_hours_to_target"])
    with pytest.raises(ValueError, match="at least 2 runs"):
        extrapolate(chain(provenance([0.5])), 0.15)
    bad = provenance([0.6, 0.5])
    del bad["history"][0]["train_seconds"]
    with pytest.raises(ValueError, match=r"'r0'.*train_seconds"):
        chain(bad)


def test_the_shipped_bundle_curve(tmp_path) -> None:
    out = tmp_path / "curve"
    main(["--bundle", str(Path(__file__).parents[2] / "models/pretrained/default"), "--out", str(out)])
    result = json.loads(out.with_suffix(".json").read_text())
    assert len(result["runs"]) >= 3 and result["runs"][-1]["core_hours"] > result["runs"][0]["core_hours"]
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert "| log_linear |" in out.with_suffix(".md").read_text()
