"""TensorRT backend: an engine built from encoder.onnx with optimisation profiles.

`build_engine` parses the ONNX step graph and builds a serialized engine (`encoder.plan`, or
`encoder.fp16.plan` with `fp16`) whose profile covers batch 1..max_batch and chunk sizes
4..4 x chunk frames (+ lookahead); states share the batch range. The runtime binds torch CUDA
tensors as device buffers (torch is already a dependency; no pycuda).

This path needs an NVIDIA GPU and the `tensorrt` Python package (pip install tensorrt, matching
the CUDA driver). Neither exists on the CPU machines this project is built on: there the
backend raises BackendUnavailable with that message. It has not been validated on a GPU yet
(see docs/RESULTS.md); `onnxruntime` with the TensorRT execution provider is the alternative.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models.backends.base import BackendConfig, BackendUnavailable, zero_state


def _tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(
            "tensorrt backend: the `tensorrt` Python package is not installed (pip install "
            "tensorrt, on a machine with an NVIDIA GPU and driver); on CPU use the torch or "
            "onnxruntime backend") from exc
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailable("tensorrt backend: no CUDA device visible to torch "
                                 "(needs an NVIDIA GPU and a CUDA build of torch)")
    return trt


def engine_path(bundle: Any, fp16: bool) -> Path:
    return Path(bundle.path) / ("encoder.fp16.plan" if fp16 else "encoder.plan")


def build_engine(bundle: Any, cfg: BackendConfig, out: Path | None = None) -> Path:
    trt = _tensorrt()
    from models.backends.ort_backend import onnx_path

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path(bundle).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse encoder.onnx: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    if cfg.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    la = bundle.model.lookahead_frames
    chunk = bundle.decoding.chunk_frames
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        dims = list(t.shape)
        lo, opt, hi = list(dims), list(dims), list(dims)
        lo[0], opt[0], hi[0] = 1, min(16, cfg.max_batch), cfg.max_batch
        if t.name == "features":
            lo[1], opt[1], hi[1] = 4 + la, chunk + la, 4 * chunk + la
        profile.set_shape(t.name, lo, opt, hi)
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError("TensorRT engine build failed (see the TensorRT log above)")
    path = out or engine_path(bundle, cfg.fp16)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(plan))
    return path


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, bundle: Any, cfg: BackendConfig):
        trt = _tensorrt()
        import torch

        if cfg.device != "cuda":
            raise BackendUnavailable("tensorrt backend runs on device=cuda only")
        path = engine_path(bundle, cfg.fp16)
        if not path.is_file():
            build_engine(bundle, cfg, path)
        self.torch = torch
        self.bundle = bundle
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(path.read_bytes())
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        from models.export.onnx import state_names

        self.state_names = state_names(bundle.model)

    def init_state(self, batch: int) -> dict[str, np.ndarray]:
        return zero_state(self.bundle, batch)

    def step(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        keep = []
        for name in self.inputs:
            t = torch.from_numpy(np.ascontiguousarray(inputs[name], dtype=np.float32)).cuda()
            keep.append(t)
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        outs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            outs[name] = torch.empty(shape, dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(name, outs[name].data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return {k: v.cpu().numpy() for k, v in outs.items()}
