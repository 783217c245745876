import json
import subprocess
import sys

import numpy as np
import soundfile as sf


def test_features_cli_streaming_equals_offline(tmp_path) -> None:
    rate = 22050
    t = np.arange(rate) / rate
    sf.write(tmp_path / "a.wav", (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), rate)
    proc = subprocess.run([sys.executable, "-m", "clients.cli", "features", str(tmp_path / "a.wav"),
                           "--chunk-ms", "37"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["frames"] == 98 and out["max_abs_diff_streaming_vs_offline"] <= 1e-5


def test_features_cli_reports_unreadable_audio(tmp_path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    proc = subprocess.run([sys.executable, "-m", "clients.cli", "features", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "chorus: error: cannot read audio" in proc.stderr
    assert "Traceback" not in proc.stderr
