"""Reproductions: slow experiments run as commands, each writing a table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_report(out: Path, result: dict[str, Any], table: str) -> None:
    """An experiment's result as out.json and its markdown table as out.md (parents made)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(table)
