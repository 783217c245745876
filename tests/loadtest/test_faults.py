"""`chorus loadtest faults`, tiny, against a real server it starts itself: every fault gets
the documented error and every healthy stream beside the faults keeps its solo transcript."""

from __future__ import annotations

import json
import subprocess
import sys

from loadtest.faults import catalogue
from tests.models.test_cli import tiny_bundle


def test_faults_command(tmp_path) -> None:
    bundle = tiny_bundle(tmp_path / "b")
    proc = subprocess.run(
        [sys.executable, "-m", "clients.cli", "loadtest", "faults", "--bundle", str(bundle),
         "--healthy", "2", "--healthy-seconds", "1.5", "--per-round", "100", "--burst-rate", "10",
         "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    r = json.loads((tmp_path / "faults.json").read_text())
    rows = {x["fault"]: x for x in r["rows"]}
    assert set(rows) == {f.name for f in catalogue()} | {"sigterm-drain"}
    assert r["ok"] and not [x for x in r["rows"] if x["skipped"] or not x["ok"]]
    assert all(x["healthy_total"] > 0 and x["healthy_intact"] == x["healthy_total"]
               for x in r["rows"])
    assert rows["ws-odd-pcm16-frame"]["got"].startswith("close 1007 bad_audio")
    assert rows["grpc-slow-reader"]["got"].startswith("RESOURCE_EXHAUSTED: client_too_slow")
    assert "10/10 resumed with the solo finals" in rows["ws-abort-burst"]["got"]
    assert rows["sigterm-drain"]["got"].startswith("exit 0")
    md = (tmp_path / "faults.md").read_text()
    assert "| fault | expected | what the faulty client got | ok | healthy streams intact |" in md
