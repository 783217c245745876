"""Inference backends (DESIGN 3.3): one `step` over numpy arrays, whatever runs it.

`make_backend(name, bundle, device=..., threads=...)` returns a `Backend`. A backend whose
library or device is missing raises `BackendUnavailable` at construction, naming what to
install; there is never a silent fallback to another backend or device.
"""

from __future__ import annotations

from typing import Any

from models.backends.base import Backend, BackendConfig, BackendUnavailable

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def make_backend(name: str, bundle: Any, config: BackendConfig | None = None) -> Backend:
    cfg = config or BackendConfig()
    if cfg.int8 and (name != "torch" or cfg.device != "cpu"):
        raise ValueError(f"int8 needs backend torch on device cpu (got backend {name!r}, device "
                         f"{cfg.device!r}): onnxruntime's quantizer has no GRU kernel, and on a "
                         "GPU TensorRT fp16 is the faster path")
    if name == "torch":
        from models.backends.torch_backend import TorchBackend

        return TorchBackend(bundle, cfg)
    if name == "onnxruntime":
        from models.backends.ort_backend import OrtBackend

        return OrtBackend(bundle, cfg, tensorrt_provider=cfg.ort_tensorrt)
    if name == "tensorrt":
        from models.backends.trt_backend import TensorRTBackend

        return TensorRTBackend(bundle, cfg)
    raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")


__all__ = ["BACKENDS", "Backend", "BackendConfig", "BackendUnavailable", "make_backend"]
