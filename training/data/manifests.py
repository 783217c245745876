"""Manifests trained together: their cut ids must be distinct.

Lhotse's `CutSet` addition keeps a repeated id silently (and a training epoch would see that
cut twice, or an id-keyed cache would mix two recordings), so every path that trains on more
than one manifest refuses a shared id first, naming it and both files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def check_distinct_ids(parts: Iterable[tuple[str | Path, Iterable[str]]]) -> None:
    """Raise ValueError naming the first cut id that two parts (path, ids) share."""
    seen: dict[str, str | Path] = {}
    for path, ids in parts:
        for cid in ids:
            if cid in seen:
                raise ValueError(f"cut id {cid!r} is in both {seen[cid]} and {path}: corpora "
                                 "trained together need distinct ids (chorus data synth "
                                 "--id-prefix)")
            seen[cid] = path
