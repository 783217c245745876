"""onnxruntime backend over the bundle's encoder.onnx (exported on first use if absent or if
it was exported from other weights: its metadata carries the weights' SHA-256).

Providers are explicit: device=cpu -> CPUExecutionProvider, device=cuda -> CUDAExecutionProvider,
`tensorrt_provider=True` -> TensorrtExecutionProvider (then CUDA for unsupported nodes). A
provider that this onnxruntime build lacks raises BackendUnavailable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from models.backends.base import BackendConfig, BackendUnavailable, zero_state


def onnx_path(bundle: Any) -> Path:
    from models.export.onnx import ONNX_FILE, export_onnx, is_current

    path = Path(bundle.path) / ONNX_FILE
    if not path.is_file() or not is_current(bundle, path):  # absent, or from other weights
        try:
            export_onnx(bundle, path)
        except OSError:  # read-only bundle directory: export next to the user's cache
            import tempfile

            path = export_onnx(bundle, Path(tempfile.mkdtemp(prefix="chorus-onnx-")) / ONNX_FILE)
    return path


def session(path: Path, providers: list[Any], threads: int) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailable("onnxruntime backend: the onnxruntime package is missing; "
                                 "pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA)") from exc
    names = [p if isinstance(p, str) else p[0] for p in providers]
    missing = [p for p in names if p not in ort.get_available_providers()]
    if missing:
        raise BackendUnavailable(
            f"onnxruntime backend: execution provider(s) {missing} not in this build "
            f"(available: {ort.get_available_providers()}); install onnxruntime-gpu for CUDA / "
            "TensorRT providers, on a machine with an NVIDIA GPU")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=providers)


class OrtBackend:
    name = "onnxruntime"

    def __init__(self, bundle: Any, cfg: BackendConfig, *, tensorrt_provider: bool = False):
        if tensorrt_provider:
            trt_opts = {"trt_fp16_enable": cfg.fp16, "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": str(Path(bundle.path) / "trt_cache")}
            providers: list[Any] = [("TensorrtExecutionProvider", trt_opts), "CUDAExecutionProvider"]
        elif cfg.device == "cuda":
            providers = ["CUDAExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self.bundle = bundle
        self.session = session(onnx_path(bundle), providers, cfg.threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.state_names = json.loads(meta["state_names"])
        self.output_names = [o.name for o in self.session.get_outputs()]

    def init_state(self, batch: int) -> dict[str, np.ndarray]:
        return zero_state(self.bundle, batch)

    def step(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {"features": np.ascontiguousarray(inputs["features"], dtype=np.float32)}
        for n in self.state_names:
            feed[f"state_{n}"] = np.ascontiguousarray(inputs[f"state_{n}"], dtype=np.float32)
        outs = self.session.run(self.output_names, feed)
        return dict(zip(self.output_names, outs, strict=True))
