"""The capacity harness end to end: a real server process, real-time streams, both protocols."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.models.test_cli import tiny_bundle


@pytest.mark.parametrize("protocol", ["ws", "grpc"])
def test_capacity_harness(tmp_path, protocol) -> None:
    bundle = tiny_bundle(tmp_path / "b")
    proc = subprocess.run(
        [sys.executable, "-m", "clients.cli", "loadtest", "capacity", "--protocol", protocol,
         "--bundle", str(bundle), "--streams", "1,3", "--seconds", "2", "--policy", "eager,none",
         "--out", str(tmp_path), "--backend", "onnxruntime"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    r = json.loads((tmp_path / f"capacity-{protocol}.json").read_text())
    assert [(x["policy"], x["streams"]) for x in r["rows"]] == [("eager", 1), ("eager", 3),
                                                                ("none", 1), ("none", 3)]
    assert all(x["errors"] == 0 and x["partials"] > 0 and x["p99_ms"] > 0 for x in r["rows"])
    assert set(r["capacity"]) == {"eager", "none"}
    assert (tmp_path / f"capacity-{protocol}.png").stat().st_size > 1000
