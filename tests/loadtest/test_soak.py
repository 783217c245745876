"""`chorus loadtest soak`, tiny (0.2 minutes, 2 streams), against a real server it starts
itself: resources sampled through psutil and /metrics, no errors, no final lost, the open
streams back to 0 once the load stops."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from loadtest.soak import SoakConfig, growth, server_total
from tests.models.test_cli import tiny_bundle


def test_growth_compares_the_first_and_last_windows() -> None:
    samples = [{"t_s": float(t), "rss_mb": 100.0 + t, "fds": 10.0, "threads": float("nan"),
                "py_threads": 3.0, "asyncio_tasks": 20.0, "open_streams": 2.0} for t in range(0, 181, 5)]
    g = growth(samples, window_s=60)
    assert g["rss_mb"]["first"] == pytest.approx(130.0) and g["rss_mb"]["last"] == pytest.approx(250.0)
    assert g["rss_mb"]["per_minute"] == pytest.approx(60.0) and g["fds"]["growth"] == 0
    assert "threads" not in g  # never measured
    assert SoakConfig(capacity=40, load=0.8).streams() == 32


def test_server_total_reads_one_process_or_sums_the_workers() -> None:
    assert server_total({"chorus_threads": 5.0}, "chorus_threads") == 5.0
    workers = {'chorus_threads{worker="0"}': 4.0, 'chorus_threads{worker="1"}': 6.0,
               "chorus_threads_total": 1.0, 'chorus_threads_x{worker="0"}': 9.0}
    assert server_total(workers, "chorus_threads") == 10.0
    assert math.isnan(server_total({}, "chorus_threads"))


def test_soak_command_against_a_two_worker_server(tmp_path) -> None:
    """Every resource is measured across the server's two worker processes (psutil on the
    supervisor and its children; /metrics' per-worker gauges summed): none is left NaN."""
    bundle = tiny_bundle(tmp_path / "b")
    cap = tmp_path / "capacity-ws.json"
    cap.write_text(json.dumps({"capacity": {"eager": 2, "none": 1}}))
    proc = subprocess.run(
        [sys.executable, "-m", "clients.cli", "loadtest", "soak", "--bundle", str(bundle),
         "--minutes", "0.2", "--capacity-json", str(cap), "--load", "1", "--sample-s", "1",
         "--utterance-seconds", "2", "--workers", "2", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads((tmp_path / "soak.json").read_text())
    assert r["streams"] == 2 and r["ok"] and r["started"] and r["exit_code"] == 0
    assert r["utterances"] >= 4 and r["errors"] == 0 and r["finals_lost"] == 0
    assert r["finals_expected"] == r["finals_received"] > 0 and r["mismatched"] == 0
    assert len(r["samples"]) >= 5 and r["after"]["open_streams"] == 0
    for name in ("rss_mb", "fds", "threads", "py_threads", "asyncio_tasks"):
        assert all(math.isfinite(s[name]) and s[name] > 0 for s in r["samples"]), name
        assert name in r["growth"]
    assert max(s["open_streams"] for s in r["samples"]) == 2
    assert all(s["processes"] >= 3 for s in r["samples"])  # the supervisor and both workers
    assert (tmp_path / "soak.png").stat().st_size > 1000
    assert "| resource | idle | first window |" in (tmp_path / "soak.md").read_text()
