"""Exporters: ONNX (encoder step with explicit streaming state), TensorRT engines from it, and
Triton model repositories (models.export.triton)."""

from __future__ import annotations

import os
from pathlib import Path


def out_file(out: str | Path | None, default: Path) -> Path:
    """Where an exporter writes one file: `default` when `out` is None; inside `out` (under the
    default's name) when `out` is an existing directory or ends with a path separator;
    otherwise `out` itself."""
    if out is None:
        return default
    text = os.fspath(out)
    path = Path(text)
    if path.is_dir() or text.endswith(("/", os.sep)):
        return path / default.name
    return path
