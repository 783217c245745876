import json
import subprocess
import sys


def run_chorus(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clients.cli", *args], capture_output=True,
                          text=True, timeout=300, check=False)


def test_data_synth_cli(tmp_path) -> None:
    proc = run_chorus("data", "synth", "--out", str(tmp_path), "--hours", "0.004", "--jobs", "2",
                      "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    assert "s audio" in proc.stderr  # the progress bar
    summary = json.loads(proc.stdout)
    assert summary["hours"] >= 0.004 and summary["utterances"] >= 1
    for split in ("train", "dev", "test"):
        assert (tmp_path / f"cuts_{split}.jsonl.gz").is_file()
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["utterances"] == summary["utterances"]


def test_data_synth_rejects_bad_hours(tmp_path) -> None:
    proc = run_chorus("data", "synth", "--out", str(tmp_path), "--hours", "0")
    assert proc.returncode != 0 and "--hours must be positive" in proc.stderr
