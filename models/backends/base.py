"""The backend contract: numpy in, numpy out, state batched on dim 0 (DESIGN 3.2 / 3.3).

inputs  {"features": (B, T + lookahead, F) float32, "state_<name>": (B, ...) float32, ...}
outputs {"outputs": (B, T / subsampling, X) float32 (log-probs, or joiner-space encoder frames
for RNN-T: the bundle's output_kind), "new_state_<name>": (B, ...), ...}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np


class BackendUnavailable(RuntimeError):
    """The backend's library or device is missing; the message says what to install."""


@dataclass(frozen=True)
class BackendConfig:
    device: Literal["cpu", "cuda"] = "cpu"
    threads: int = 1  # intra-op threads (CPU); explicit, never "all cores"
    max_batch: int = 64  # TensorRT optimisation profile upper bound
    fp16: bool = False  # TensorRT only
    ort_tensorrt: bool = False  # onnxruntime: TensorRT execution provider (needs onnxruntime-gpu)
    int8: bool = False  # torch on CPU: dynamic int8 GRU / LSTM / Linear (models/quantize.py)


class Backend(Protocol):
    name: str
    state_names: list[str]

    def init_state(self, batch: int) -> dict[str, np.ndarray]:
        """Zero state for `batch` streams: {"state_<name>": (batch, ...)}."""
        ...

    def step(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def zero_state(bundle: object, batch: int) -> dict[str, np.ndarray]:
    state = bundle.model.init_state(batch)  # type: ignore[attr-defined]
    return {f"state_{k}": v.cpu().numpy() for k, v in state.items()}
