"""A short headless locust run against a real server: both users, zero failures."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.bundle import load
from tests.models.test_cli import tiny_bundle
from tests.server.conftest import running_server

LOCUSTFILE = Path(__file__).parents[2] / "loadtest" / "locustfile.py"


@pytest.mark.parametrize("user", ["WsStreamUser", "GrpcStreamUser"])
def test_locust_users(tmp_path, user) -> None:
    bundle = load(tiny_bundle(tmp_path / "b"))
    with running_server(bundle) as app:
        env = {**os.environ, "CHORUS_GRPC": f"127.0.0.1:{app.cfg.grpc_port}",
               "PYTHONPATH": str(LOCUSTFILE.parents[1])}
        proc = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), user, "--headless",
             "-u", "3", "-r", "3", "-t", "8s", "--host", f"ws://127.0.0.1:{app.cfg.ws_port}",
             "--csv", str(tmp_path / "run"), "--only-summary", "--exit-code-on-error", "1"],
            capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["Name"]: r for r in csv.DictReader((tmp_path / "run_stats.csv").open())}
    assert int(rows["partial"]["Request Count"]) > 10, rows.keys()
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    assert float(rows["partial"]["50%"]) > 0
