"""The capacity harness end to end: a real server process, real-time streams, both protocols;
over gRPC also the same server as two worker processes (`--workers 1,2`); over WebSocket also
the server in int8 (`--backend torch+int8`: chorus serve --backend torch --int8)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.models.test_cli import tiny_bundle


@pytest.mark.parametrize("protocol, repeats, workers, backend", [
    ("ws", 2, "1", "onnxruntime"), ("grpc", 1, "1,2", "onnxruntime"), ("ws", 1, "1", "torch+int8")])
def test_capacity_harness(tmp_path, protocol, repeats, workers, backend) -> None:
    bundle = tiny_bundle(tmp_path / "b")
    proc = subprocess.run(
        [sys.executable, "-m", "clients.cli", "loadtest", "capacity", "--protocol", protocol,
         "--bundle", str(bundle), "--streams", "1,3", "--seconds", "1.5", "--warm-s", "0.5",
         "--spread-s", "0.4", "--repeats", str(repeats), "--policy", "eager,none",
         "--out", str(tmp_path), "--backend", backend, "--workers", workers],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    r = json.loads((tmp_path / f"capacity-{protocol}.json").read_text())
    servers = ["eager", "none"] + (["eager x2", "none x2"] if workers == "1,2" else [])
    assert [(x["policy"], x["streams"]) for x in r["rows"]] == [
        (s, n) for s in servers for n in (1, 3)]
    for x in r["rows"]:
        assert x["errors"] == 0 and x["partials"] > 0 and x["p99_ms"] > 0, x
        # the client's audio count is the server's: every partial names a frame it sent
        assert x["unmatched"] == 0 and x["end_partials"] >= 0, x
        assert len(x["runs"]) == x["repeats"] == repeats
        assert x["p99_ms_min"] <= x["p99_ms"] <= x["p99_ms_max"], x
        assert 0 < x["server_p50_ms"] <= x["p50_ms"], x  # the server's share of the latency
        assert x["server_cpu_cores"] > 0, x  # workers: the CPU of the worker processes counted
    assert list(r["capacity"]) == servers and r["config"]["backend"] == backend
    assert (tmp_path / f"capacity-{protocol}.png").stat().st_size > 1000
    table = (tmp_path / f"capacity-{protocol}.md").read_text()
    assert "end partials" in table and "server p99 ms" in table


def test_an_unknown_precision_suffix_is_named() -> None:
    from loadtest.harness import ServerProcess

    with pytest.raises(ValueError, match="only precision suffix is '\\+int8'"):
        ServerProcess(backend="torch+fp16")
