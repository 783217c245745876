"""A small stand-in for tritonserver (which cannot run here: no server binary, no GPU) that
runs an exported model repository the way Triton's documented semantics say, reading
everything from the parsed config.pbtxt files (tritonclient's model_config_pb2):

- sequence batcher, strategy oldest: requests of several sequences batched together (same
  shapes only, as the dynamic batcher does), control tensors START / READY / END / CORRID made
  from each config's control_input (fp32/int32/bool false_true values, CORRID data_type);
- implicit state: `state.input_name` fed from the previous request's `state.output_name` of
  the same sequence, `initial_state` (zero_data, its dims) on a sequence's first request,
  state dropped after END;
- onnxruntime models run with onnxruntime; Python-backend models load their model.py with a
  fake `triton_python_backend_utils` and get `initialize(args)` with the config as JSON;
- an ensemble routes tensors between steps by input_map / output_map.

It checks our repository against the semantics, not Triton itself: what only a real
tritonserver can show (its config validation, its ONNX Runtime backend) is out of its reach.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as pb

NUMPY = {pb.TYPE_FP32: np.float32, pb.TYPE_FP16: np.float16, pb.TYPE_INT32: np.int32,
         pb.TYPE_INT64: np.int64, pb.TYPE_UINT64: np.uint64, pb.TYPE_BOOL: np.bool_,
         pb.TYPE_STRING: np.object_}
ORT_TYPES = {"tensor(float)": pb.TYPE_FP32, "tensor(float16)": pb.TYPE_FP16,
             "tensor(int32)": pb.TYPE_INT32, "tensor(int64)": pb.TYPE_INT64,
             "tensor(uint64)": pb.TYPE_UINT64, "tensor(bool)": pb.TYPE_BOOL}


def parse_config(path: Path) -> Any:
    return text_format.Parse(path.read_text(), pb.ModelConfig())


@dataclass
class Request:
    corrid: int
    start: bool
    end: bool
    inputs: dict[str, np.ndarray] = field(default_factory=dict)  # each (1, ...)


def control_tensors(config: Any, req: Request) -> dict[str, np.ndarray]:
    """The (1, 1) control tensors Triton's sequence batcher gives one request."""
    kinds = pb.ModelSequenceBatching.Control
    flags = {kinds.CONTROL_SEQUENCE_START: req.start, kinds.CONTROL_SEQUENCE_END: req.end,
             kinds.CONTROL_SEQUENCE_READY: True}  # oldest: every batched request is ready
    out = {}
    for ci in config.sequence_batching.control_input:
        (c,) = ci.control
        if c.kind == kinds.CONTROL_SEQUENCE_CORRID:
            out[ci.name] = np.array([[req.corrid]], NUMPY[c.data_type])
            continue
        flag = int(flags[c.kind])
        for values, dtype in ((c.fp32_false_true, np.float32), (c.int32_false_true, np.int32),
                              (c.bool_false_true, np.bool_)):
            if len(values):
                out[ci.name] = np.array([[values[flag]]], dtype)
    return out


class OnnxSequenceModel:
    def __init__(self, config: Any, model_dir: Path):
        import onnxruntime as ort

        self.config = config
        self.session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"),
                                            providers=["CPUExecutionProvider"])
        self.states: dict[int, dict[str, np.ndarray]] = {}

    def execute(self, reqs: list[Request]) -> list[dict[str, np.ndarray]]:
        cfg = self.config
        assert len(reqs) <= cfg.max_batch_size
        feeds = {i.name: np.concatenate([r.inputs[i.name] for r in reqs]).astype(NUMPY[i.data_type])
                 for i in cfg.input}
        ctl = [control_tensors(cfg, r) for r in reqs]
        feeds.update({name: np.concatenate([c[name] for c in ctl]) for name in ctl[0]})
        for st in cfg.sequence_batching.state:
            (init,) = st.initial_state
            assert init.zero_data
            rows = [np.zeros((1, *init.dims), NUMPY[init.data_type])
                    if r.start or r.corrid not in self.states else self.states[r.corrid][st.input_name]
                    for r in reqs]
            feeds[st.input_name] = np.concatenate(rows)
        names = [o.name for o in self.session.get_outputs()]
        outs = dict(zip(names, self.session.run(None, feeds), strict=True))
        results = []
        for b, r in enumerate(reqs):
            if r.end:
                self.states.pop(r.corrid, None)
            else:
                self.states[r.corrid] = {st.input_name: outs[st.output_name][b : b + 1]
                                         for st in cfg.sequence_batching.state}
            results.append({o.name: outs[o.name][b : b + 1] for o in cfg.output})
        return results


def fake_pb_utils() -> types.ModuleType:
    """What model.py uses of Triton's triton_python_backend_utils."""
    m = types.ModuleType("triton_python_backend_utils")

    class Tensor:
        def __init__(self, name: str, array: np.ndarray):
            self._name, self._array = name, array

        def name(self) -> str:
            return self._name

        def as_numpy(self) -> np.ndarray:
            return self._array

    class TritonError:
        def __init__(self, message: str):
            self._message = message

        def message(self) -> str:
            return self._message

    class InferenceResponse:
        def __init__(self, output_tensors: list[Tensor] | None = None, error: Any = None):
            self._outputs, self._error = list(output_tensors or []), error

        def output_tensors(self) -> list[Tensor]:
            return self._outputs

        def has_error(self) -> bool:
            return self._error is not None

        def error(self) -> Any:
            return self._error

    class InferenceRequest:
        def __init__(self, inputs: list[Tensor]):
            self.inputs = {t.name(): t for t in inputs}

    m.Tensor, m.TritonError, m.InferenceResponse = Tensor, TritonError, InferenceResponse  # type: ignore[attr-defined]
    m.InferenceRequest = InferenceRequest  # type: ignore[attr-defined]
    m.get_input_tensor_by_name = lambda request, name: request.inputs.get(name)  # type: ignore[attr-defined]
    return m


class PythonSequenceModel:
    def __init__(self, config: Any, model_dir: Path):
        self.config = config
        self.pb_utils = fake_pb_utils()
        saved = sys.modules.get("triton_python_backend_utils")
        sys.modules["triton_python_backend_utils"] = self.pb_utils
        try:
            spec = importlib.util.spec_from_file_location(f"triton_model_{config.name}",
                                                          model_dir / "1" / "model.py")
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        finally:
            if saved is None:
                sys.modules.pop("triton_python_backend_utils", None)
            else:
                sys.modules["triton_python_backend_utils"] = saved
        self.model = module.TritonPythonModel()
        self.model.initialize({"model_config": json_format.MessageToJson(
            config, preserving_proto_field_name=True), "model_repository": str(model_dir),
            "model_version": "1", "model_name": config.name, "model_instance_kind": "CPU"})

    def execute(self, reqs: list[Request]) -> list[dict[str, Any]]:
        Tensor, Req = self.pb_utils.Tensor, self.pb_utils.InferenceRequest  # type: ignore[attr-defined]
        requests = [Req([Tensor(k, v) for k, v in {**r.inputs, **control_tensors(self.config, r)}.items()])
                    for r in reqs]
        out = []
        for resp in self.model.execute(requests):
            if resp.has_error():
                out.append({"error": resp.error().message()})
            else:
                out.append({t.name(): t.as_numpy() for t in resp.output_tensors()})
        return out


class Repository:
    """The repository's ensemble run over batches of requests, one per live sequence."""

    def __init__(self, root: Path, configs: dict[str, Any] | None = None):
        self.configs = configs or {p.parent.name: parse_config(p) for p in root.glob("*/config.pbtxt")}
        self.models: dict[str, Any] = {}
        for name, cfg in self.configs.items():
            if cfg.backend == "onnxruntime":
                self.models[name] = OnnxSequenceModel(cfg, root / name)
            elif cfg.backend == "python":
                self.models[name] = PythonSequenceModel(cfg, root / name)
        (self.ensemble,) = [c for c in self.configs.values() if c.platform == "ensemble"]

    def run(self, reqs: list[Request]) -> list[dict[str, Any]]:
        """Requests grouped by input shapes (the dynamic batcher batches equal shapes only);
        returns every ensemble tensor (intermediates too) per request."""
        results: list[dict[str, Any]] = [dict(r.inputs) for r in reqs]
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, r in enumerate(reqs):
            groups.setdefault(tuple(v.shape for v in r.inputs.values()), []).append(i)
        for idx in groups.values():
            for step in self.ensemble.ensemble_scheduling.step:
                sub = [Request(reqs[i].corrid, reqs[i].start, reqs[i].end,
                               {k: results[i][v] for k, v in step.input_map.items()}) for i in idx]
                for i, out in zip(idx, self.models[step.model_name].execute(sub), strict=True):
                    assert "error" not in out, out
                    results[i].update({v: out[k] for k, v in step.output_map.items()})
        return results


def result_json(tensors: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(tensors["result"][0, 0].decode("utf-8")))
