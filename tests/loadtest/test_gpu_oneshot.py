"""The GPU serving one-shot (loadtest/gpu_oneshot.py) on this machine's CPU: `prepare` speaks
the speech into an array file, `run --device cpu` plays it through the server's own
Stream / Session path and writes the report; on a machine without CUDA, `run` (device cuda)
says what cannot run instead of failing half-way."""

import json
import os
import subprocess
import sys
from pathlib import Path

from loadtest.gpu_oneshot import load_pool, prepare

ROOT = Path(__file__).parents[2]


def test_prepare_then_run_on_cpu_writes_the_capacity_report(tmp_path) -> None:
    job = prepare(tmp_path / "carry", (1, 2), 1.0)
    pool = load_pool(tmp_path / "carry")
    assert job["clips"] == len(pool) >= 5 and all(a.dtype.name == "float32" for a in pool)
    assert all(0.5 < a.size / 16_000 < 15 and 0.01 < abs(a).max() <= 1 for a in pool)
    # the lent machine has no Lhotse, soundfile, soxr, jiwer or websockets: run without them
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import sys\nfor m in ('lhotse', 'soundfile', 'soxr', 'jiwer', 'websockets'):\n"
        "    sys.modules[m] = None\n")
    env = {**os.environ, "PYTHONPATH": f"{shim}:{ROOT}", "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, "-m", "loadtest.gpu_oneshot", "run", "--carry",
                           str(tmp_path / "carry"), "--out", str(tmp_path / "out"), "--device",
                           "cpu", "--no-progress"], capture_output=True, text=True, timeout=300,
                          env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "out/gpu-capacity-cpu.json").read_text())
    assert [(r["policy"], r["streams"]) for r in result["rows"]] == \
        [("eager", 1), ("eager", 2), ("none", 1), ("none", 2)]
    assert result["config"]["device"] == "cpu" and result["rows"][0]["roofline"] is not None
    assert (tmp_path / "out/gpu-capacity-cpu.md").is_file()


def test_run_without_a_gpu_says_what_cannot_run(tmp_path) -> None:
    prepare_cmd = [sys.executable, "-m", "loadtest.gpu_oneshot"]
    missing = subprocess.run([*prepare_cmd, "run", "--carry", str(tmp_path / "none"), "--out",
                              str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "run `prepare` here" in missing.stderr
    (tmp_path / "c").mkdir()
    (tmp_path / "c/job.json").write_text(json.dumps({"streams": [1], "seconds": 1}))
    import numpy as np

    np.savez_compressed(tmp_path / "c/speech.npz", np.zeros(16_000, np.int16))
    run = subprocess.run([*prepare_cmd, "run", "--carry", str(tmp_path / "c"), "--out",
                          str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "nothing can run on cuda here" in run.stderr and "no CUDA device" in run.stderr
