"""A Triton Inference Server model repository for a bundle (`chorus export --format triton`).

Layout written under the repository directory:

  chorus_encoder/  onnxruntime backend. 1/model.onnx is the exported step graph (encoder +
                   head, models.export.onnx) with the sequence batcher's control inputs added:
                   START (resets the stream's state in the graph), READY (a slot that is not
                   ready keeps its state), END and CORRID ((B, 1) inputs the graph ignores).
                   config.pbtxt: sequence batching, strategy `oldest` (Triton's dynamic
                   batching across streams; no queue delay: eager, like Batch Dispatch),
                   implicit state `state_<name>` -> `new_state_<name>` with zero initial
                   state, max_sequence_idle_microseconds, dynamic batch up to max_batch_size.
  chorus_decoder/  Python backend (models/export/triton_decoder.py as 1/model.py, the bundle
                   in 1/bundle/): one decoder per CORRID, partial text per request, the final on
                   END; numpy greedy CTC, or models.decoding (beam + LM, RNN-T) when chorus-asr
                   is installed in Triton's Python environment.
  chorus_asr/      ensemble: features -> chorus_encoder -> chorus_decoder -> text, result. The
                   ensemble passes the request's sequence id and start/end flags to both.
  chorus.json      what a client needs to make the features: feature settings, chunk and
                   lookahead frames, the pad frame, tensor names (`triton_requests` does it).

Every config is built as Triton's own protobuf message (tritonclient's model_config_pb2), so a
field or enum Triton does not know cannot be written. Clients compute fbank features and send
chunks (chunk + lookahead frames, as models.streaming.Chunker makes them); feature extraction
and resampling do not run inside Triton.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

ENCODER = "chorus_encoder"
DECODER = "chorus_decoder"
ENSEMBLE = "chorus_asr"
CONTROLS = ("START", "READY", "END", "CORRID")  # (B, 1) inputs of the Triton step graph
DECODER_CONTROLS = ("START", "END", "CORRID")
CLIENT_FILE = "chorus.json"
_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 6: "TYPE_INT32", 7: "TYPE_INT64",
          13: "TYPE_UINT64", 9: "TYPE_BOOL"}  # onnx.TensorProto element type -> Triton


class TritonUnavailable(RuntimeError):
    """tritonclient (which ships Triton's model_config protobuf) is not installed."""


@dataclass(frozen=True)
class TritonOptions:
    max_batch: int = 64  # max_batch_size (Batch Dispatch: ServerConfig.max_batch)
    max_streams: int = 64  # oldest.max_candidate_sequences per instance (ServerConfig.max_streams)
    idle_timeout_s: float = 30.0  # max_sequence_idle_microseconds (Limits.idle_timeout_s)
    max_queue_delay_us: int = 0  # 0: eager (policy eager); > 0 like policy timeout's max_wait_ms
    device: Literal["cpu", "cuda"] = "cpu"  # instance_group kind KIND_CPU / KIND_GPU
    instances: int = 1  # encoder model instances (each batches its own streams)
    threads: int = 1  # onnxruntime intra-op threads per instance (CPU)
    decoder: Literal["greedy", "beam"] = "greedy"


def model_config_pb2() -> Any:
    """Triton's model_config protobuf module, from tritonclient. `tritonclient.grpc` imports
    grpcio first; without it the module file is loaded alone (it needs only protobuf)."""
    loaded = sys.modules.get("tritonclient.grpc.model_config_pb2")
    if loaded is not None:
        return loaded
    try:
        from tritonclient.grpc import model_config_pb2 as pb

        return pb
    except (ImportError, RuntimeError):
        pass  # no tritonclient, or tritonclient without grpcio
    try:
        found = importlib.util.find_spec("tritonclient")
    except (ImportError, ValueError):
        found = None
    roots = list(found.submodule_search_locations or []) if found else []
    path = Path(roots[0]) / "grpc" / "model_config_pb2.py" if roots else None
    if path is None or not path.is_file():
        raise TritonUnavailable(
            "Triton export needs tritonclient (it ships Triton's model_config protobuf): "
            "pip install tritonclient, or pip install 'chorus-asr[export]'")
    spec = importlib.util.spec_from_file_location("tritonclient.grpc.model_config_pb2", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# --- the step graph with control inputs ------------------------------------------------------

def _rename(graph: Any, inputs: dict[str, str], outputs: dict[str, str]) -> None:
    """Rename tensor references in a graph's nodes (subgraphs included)."""
    for node in graph.node:
        node.input[:] = [inputs.get(x, outputs.get(x, x)) for x in node.input]
        node.output[:] = [outputs.get(x, x) for x in node.output]
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                _rename(sub, inputs, outputs)
    for info in graph.value_info:
        info.name = outputs.get(info.name, info.name)


def triton_onnx(src: str | Path, dst: str | Path) -> Path:
    """encoder.onnx + the sequence batcher's controls, for the onnxruntime backend (which
    requires every configured control to be a (B, 1) model input). Per state tensor:
    state = state_in * (1 - START); new_state = READY * new + (1 - READY) * state."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    meta = {p.key: p.value for p in model.metadata_props}
    names: list[str] = json.loads(meta["state_names"])
    ins = {i.name: i for i in graph.input}
    if set(CONTROLS) & set(ins):
        raise ValueError(f"{src}: already has Triton control inputs")
    for ctl in CONTROLS:
        elem = TensorProto.UINT64 if ctl == "CORRID" else TensorProto.FLOAT
        graph.input.append(helper.make_tensor_value_info(ctl, elem, ["batch", 1]))
    graph.initializer.append(numpy_helper.from_array(np.ones((1, 1), np.float32), "_chorus_one"))
    pre = [helper.make_node("Sub", ["_chorus_one", "START"], ["_chorus_keep"]),
           helper.make_node("Sub", ["_chorus_one", "READY"], ["_chorus_hold"])]
    post = []
    ranks = sorted({len(ins[f"state_{n}"].type.tensor_type.shape.dim) for n in names})
    for rank in ranks:  # (B, 1) -> (B, 1, ..., 1) to broadcast over a state of this rank
        shape = f"_chorus_shape{rank}"
        graph.initializer.append(numpy_helper.from_array(np.array([-1] + [1] * (rank - 1), np.int64), shape))
        for flag in ("keep", "hold"):
            pre.append(helper.make_node("Reshape", [f"_chorus_{flag}", shape], [f"_chorus_{flag}{rank}"]))
        pre.append(helper.make_node("Reshape", ["READY", shape], [f"_chorus_ready{rank}"]))
    renamed_in = {f"state_{n}": f"_chorus_state_{n}" for n in names}
    renamed_out = {f"new_state_{n}": f"_chorus_new_state_{n}" for n in names}
    _rename(graph, renamed_in, renamed_out)
    for n in names:
        rank = len(ins[f"state_{n}"].type.tensor_type.shape.dim)
        state, raw = renamed_in[f"state_{n}"], renamed_out[f"new_state_{n}"]
        pre.append(helper.make_node("Mul", [f"state_{n}", f"_chorus_keep{rank}"], [state]))
        post += [helper.make_node("Mul", [raw, f"_chorus_ready{rank}"], [f"{raw}_ready"]),
                 helper.make_node("Mul", [state, f"_chorus_hold{rank}"], [f"{raw}_held"]),
                 helper.make_node("Add", [f"{raw}_ready", f"{raw}_held"], [f"new_state_{n}"])]
    nodes = [*pre, *graph.node, *post]
    del graph.node[:]
    graph.node.extend(nodes)
    for out in graph.output:  # a state keeps its shape: say so (the tracer left some dims symbolic)
        if out.name.startswith("new_state_"):
            out.type.CopyFrom(ins[out.name[len("new_"):]].type)
    entry = model.metadata_props.add()
    entry.key, entry.value = "triton_controls", ",".join(CONTROLS)
    onnx.checker.check_model(model)
    path = Path(dst)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def verify_triton_onnx(bundle: Any, path: Path) -> float:
    """Max |onnxruntime - torch| over three streams: one starting (START resets its random
    state), one going on, one not ready (its state must come back unchanged)."""
    from models.backends import make_backend
    from models.backends.ort_backend import session

    rng = np.random.default_rng(0)
    torch_be = make_backend("torch", bundle)
    states = {k: rng.standard_normal(v.shape).astype(np.float32)
              for k, v in torch_be.init_state(3).items()}
    frames = bundle.decoding.chunk_frames + bundle.model.lookahead_frames
    feats = (bundle.model.encoder.feat_mean.numpy() + rng.standard_normal(
        (3, frames, bundle.features.num_mel_bins))).astype(np.float32)
    fresh = torch_be.step({"features": feats, **torch_be.init_state(3)})
    going = torch_be.step({"features": feats, **states})
    controls = {"START": np.array([[1], [0], [0]], np.float32),
                "READY": np.array([[1], [1], [0]], np.float32),
                "END": np.zeros((3, 1), np.float32), "CORRID": np.array([[7], [8], [9]], np.uint64)}
    sess = session(path, ["CPUExecutionProvider"], 1)
    got = dict(zip([o.name for o in sess.get_outputs()],
                   sess.run(None, {"features": feats, **states, **controls}), strict=True))
    diff = max(float(np.abs(got["outputs"][0] - fresh["outputs"][0]).max()),
               float(np.abs(got["outputs"][1:] - going["outputs"][1:]).max()))
    for name in states:
        new = f"new_{name}"
        want = np.concatenate([fresh[new][:1], going[new][1:2], states[name][2:]])
        diff = max(diff, float(np.abs(got[new] - want).max()))
    return diff


# --- configs ---------------------------------------------------------------------------------

def _io(proto: Any, onnx_value: Any) -> dict[str, Any]:
    """name, data_type and dims (batch dimension dropped; symbolic dims -1) of an ONNX tensor."""
    t = onnx_value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim[1:]]
    return {"name": onnx_value.name, "data_type": getattr(proto, _TYPES[t.elem_type]), "dims": dims}


def _sequence_batching(pb: Any, config: Any, opts: TritonOptions, controls: tuple[str, ...]) -> Any:
    sb = config.sequence_batching
    sb.max_sequence_idle_microseconds = int(round(opts.idle_timeout_s * 1e6))
    sb.oldest.max_candidate_sequences = opts.max_streams
    sb.oldest.max_queue_delay_microseconds = opts.max_queue_delay_us
    kinds = {"START": "CONTROL_SEQUENCE_START", "READY": "CONTROL_SEQUENCE_READY",
             "END": "CONTROL_SEQUENCE_END", "CORRID": "CONTROL_SEQUENCE_CORRID"}
    for name in controls:
        control = sb.control_input.add(name=name).control.add(
            kind=getattr(pb.ModelSequenceBatching.Control, kinds[name]))
        if name == "CORRID":
            control.data_type = pb.TYPE_UINT64
        else:
            control.fp32_false_true.extend([0.0, 1.0])
    return sb


def encoder_config(pb: Any, onnx_model: Any, opts: TritonOptions) -> Any:
    graph = onnx_model.graph
    ins = {i.name: i for i in graph.input}
    outs = {o.name: o for o in graph.output}
    names = json.loads({p.key: p.value for p in onnx_model.metadata_props}["state_names"])
    config = pb.ModelConfig(name=ENCODER, backend="onnxruntime", max_batch_size=opts.max_batch)
    config.input.add(**_io(pb, ins["features"]))
    config.output.add(**_io(pb, outs["outputs"]))
    sb = _sequence_batching(pb, config, opts, CONTROLS)
    for n in names:
        io = _io(pb, ins[f"state_{n}"])
        state = sb.state.add(input_name=f"state_{n}", output_name=f"new_state_{n}",
                             data_type=io["data_type"], dims=io["dims"])
        state.initial_state.add(data_type=io["data_type"], dims=io["dims"], zero_data=True,
                                name=f"zero_{n}")
    kind = pb.ModelInstanceGroup.KIND_GPU if opts.device == "cuda" else pb.ModelInstanceGroup.KIND_CPU
    config.instance_group.add(kind=kind, count=opts.instances)
    for key, value in (("intra_op_thread_count", opts.threads), ("inter_op_thread_count", 1)):
        config.parameters[key].string_value = str(value)
    return config


def decoder_config(pb: Any, bundle: Any, encoder: Any, opts: TritonOptions) -> Any:
    config = pb.ModelConfig(name=DECODER, backend="python", max_batch_size=opts.max_batch)
    out = encoder.output[0]
    config.input.add(name="outputs", data_type=out.data_type, dims=list(out.dims))
    for name in ("text", "result"):
        config.output.add(name=name, data_type=pb.TYPE_STRING, dims=[1])
    _sequence_batching(pb, config, opts, DECODER_CONTROLS)
    config.instance_group.add(kind=pb.ModelInstanceGroup.KIND_CPU, count=1)
    numpy_ok = opts.decoder == "greedy" and bundle.model.output_kind == "log_probs"
    params = {"decoder": opts.decoder, "implementation": "numpy" if numpy_ok else "chorus",
              "frame_seconds": repr(bundle.frame_seconds), "threads": "1"}
    for key, value in params.items():
        config.parameters[key].string_value = value
    return config


def ensemble_config(pb: Any, encoder: Any, decoder: Any, opts: TritonOptions) -> Any:
    config = pb.ModelConfig(name=ENSEMBLE, platform="ensemble", max_batch_size=opts.max_batch)
    feats = encoder.input[0]
    config.input.add(name=feats.name, data_type=feats.data_type, dims=list(feats.dims))
    for out in decoder.output:
        config.output.add(name=out.name, data_type=out.data_type, dims=list(out.dims))
    steps = config.ensemble_scheduling.step
    enc = steps.add(model_name=ENCODER, model_version=-1)
    enc.input_map["features"] = feats.name
    enc.output_map["outputs"] = "encoder_outputs"
    dec = steps.add(model_name=DECODER, model_version=-1)
    dec.input_map["outputs"] = "encoder_outputs"
    for out in decoder.output:
        dec.output_map[out.name] = out.name
    return config


def write_config(config: Any, model_dir: Path) -> Path:
    """config.pbtxt in Triton's text format, with a header comment: the text format leaves
    out proto3 defaults, which here carry meaning."""
    from google.protobuf import text_format

    header = [f"# {config.name}: written by `chorus export --format triton` (docs/deploy.md)."]
    if config.HasField("sequence_batching"):
        delay = config.sequence_batching.oldest.max_queue_delay_microseconds
        header += ["# The text format omits proto3 defaults: START's control kind is",
                   "# CONTROL_SEQUENCE_START (enum value 0)"
                   + (" and oldest.max_queue_delay_microseconds is 0 (a batch never waits"
                      " to fill: eager, like Batch Dispatch)." if delay == 0 else ".")]
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / "config.pbtxt"
    path.write_text("\n".join(header) + "\n" + text_format.MessageToString(config))
    return path


# --- the repository --------------------------------------------------------------------------

def client_facts(bundle: Any) -> dict[str, Any]:
    model = bundle.model
    return {"ensemble": ENSEMBLE, "encoder": ENCODER, "decoder": DECODER,
            "input": "features", "outputs": ["text", "result"],
            "features": asdict(bundle.features), "chunk_frames": bundle.decoding.chunk_frames,
            "lookahead_frames": model.lookahead_frames, "subsampling": model.subsampling,
            "frame_seconds": bundle.frame_seconds, "output_kind": model.output_kind,
            "pad_frame": [float(x) for x in model.encoder.pad_frame.detach().cpu()],
            "sequence": "one request per chunk of chunk_frames + lookahead_frames feature frames "
                        "(the last chunk padded with pad_frame); sequence_start on the first, "
                        "sequence_end on the last, one sequence_id per stream"}


README = """# Chorus Triton model repository ({bundle})

Written by `chorus export --format triton`. Models: `{ensemble}` (ensemble: features -> text),
`{encoder}` (onnxruntime, sequence batcher `oldest`, implicit state), `{decoder}` (Python
backend, per-stream decoding: implementation `{implementation}`, decoder `{decoder_name}`).

    docker run --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 -v $PWD:/models \\
        tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models   # NVIDIA's NGC image

Clients send fbank feature chunks ({client}); see docs/deploy.md in the Chorus repository.
"""


def export_triton(bundle: Any, out: str | Path, opts: TritonOptions = TritonOptions()) -> dict[str, Any]:
    """Write the model repository under `out` (created; only our model directories are
    replaced). Returns what was written and the step graph's max difference from torch."""
    import tempfile

    import onnx

    from models.export.onnx import ONNX_FILE, export_onnx
    from models.export.transducer_onnx import JOINER_FILE, PREDICTOR_FILE

    pb = model_config_pb2()  # fail before any work when tritonclient is missing
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise ValueError(f"--out {root} is a file; Triton export writes a model repository "
                         "directory (give a new or existing directory)")
    with tempfile.TemporaryDirectory(prefix="chorus-triton-") as tmp:
        step = export_onnx(bundle, Path(tmp) / ONNX_FILE)
        for name in (ENCODER, DECODER, ENSEMBLE):
            shutil.rmtree(root / name, ignore_errors=True)
        model_path = triton_onnx(step, root / ENCODER / "1" / "model.onnx")
    diff = verify_triton_onnx(bundle, model_path)
    encoder = encoder_config(pb, onnx.load(str(model_path), load_external_data=False), opts)
    decoder = decoder_config(pb, bundle, encoder, opts)
    configs = [write_config(encoder, root / ENCODER), write_config(decoder, root / DECODER),
               write_config(ensemble_config(pb, encoder, decoder, opts), root / ENSEMBLE)]
    (root / ENSEMBLE / "1").mkdir(parents=True, exist_ok=True)  # an ensemble has no files
    version = root / DECODER / "1"
    skip = shutil.ignore_patterns(ONNX_FILE, PREDICTOR_FILE, JOINER_FILE, "*.plan", "trt_cache",
                                  "__pycache__")
    where = root.resolve()

    def ignore(folder: str, names: list[str]) -> set[str]:  # --out inside the bundle: not itself
        return set(skip(folder, names)) | {n for n in names if (Path(folder) / n).resolve() == where}

    shutil.copytree(bundle.path, version / "bundle", ignore=ignore)
    shutil.copyfile(Path(__file__).with_name("triton_decoder.py"), version / "model.py")
    facts = client_facts(bundle)
    (root / CLIENT_FILE).write_text(json.dumps(facts, indent=1) + "\n")
    (root / "README.md").write_text(README.format(
        bundle=Path(bundle.path).name, ensemble=ENSEMBLE, encoder=ENCODER, decoder=DECODER,
        implementation=decoder.parameters["implementation"].string_value,
        decoder_name=opts.decoder, client=CLIENT_FILE))
    return {"repository": str(root), "configs": [str(p) for p in configs],
            "encoder_onnx": str(model_path), "max_abs_diff_vs_torch": diff,
            "decoder": opts.decoder,
            "implementation": decoder.parameters["implementation"].string_value}


def triton_requests(bundle: Any, samples: np.ndarray) -> list[dict[str, Any]]:
    """A whole utterance (float samples at the bundle's rate) as the requests of one Triton
    sequence: {"features": (1, frames, F) float32, "sequence_start", "sequence_end"}. These
    are the Chunker's step inputs, so Triton sees what Batch Dispatch would."""
    from models.streaming import Chunker

    chunker = Chunker(bundle)
    chunks = [c.numpy() for c in chunker.accept(samples) + chunker.finish()]
    if not chunks:  # no audio: one chunk of padding so that the sequence still starts and ends
        frames = bundle.model.subsampling + bundle.model.lookahead_frames
        chunks = [np.tile(chunker.pad_frame.numpy(), (frames, 1))]
    return [{"features": c[None].astype(np.float32), "sequence_start": i == 0,
             "sequence_end": i == len(chunks) - 1} for i, c in enumerate(chunks)]
