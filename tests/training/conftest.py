"""Fixtures shared by the training tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="session")
def dialogues(tmp_path_factory) -> Path:
    """dialogues.jsonl of `chorus data dialogues --count 400` (seed 0), made once per run."""
    out = tmp_path_factory.mktemp("dialogues")
    subprocess.run([sys.executable, "-m", "clients.cli", "data", "dialogues", "--out", str(out),
                    "--count", "400"], cwd=ROOT, check=True, capture_output=True, timeout=120)
    return out / "dialogues.jsonl"
