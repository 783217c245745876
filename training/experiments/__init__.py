"""Reproductions: slow experiments run as commands, each writing a table."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def write_report(out: Path, result: dict[str, Any], table: str) -> None:
    """An experiment's result as out.json and its markdown table as out.md (parents made)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(table)


@contextmanager
def locked_table(out: Path, settings: dict[str, Any]) -> Iterator[dict[str, Any] | None]:
    """The table at out.json (None when there is none yet), held under a file lock while the
    caller merges rows into it, so side-by-side runs do not lose each other's rows; a table
    made at other settings is refused (its rows would not compare)."""
    path = out.with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = json.loads(path.read_text()) if path.exists() else None
        for key, mine in settings.items():
            if old is not None and old.get(key) != mine:
                raise SystemExit(f"{path} has {key}={old.get(key)!r}, this call {mine!r}: "
                                 "rows at different settings do not compare")
        yield old
