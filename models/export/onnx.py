"""Export the streaming step (encoder + head) to ONNX with explicit state inputs and outputs.

Graph signature (DESIGN 3.2), batch on dim 0 everywhere, batch and time axes dynamic:
  inputs   features (B, T + lookahead, F) raw fbank, state_<name> for every state tensor
  outputs  outputs (B, T / subsampling, X): log-probs (ctc, gram_ctc) or joiner-space encoder
           frames (rnnt), as metadata output_kind says; new_state_<name>
Static facts travel as ONNX metadata (chunk_frames, lookahead_frames, subsampling,
output_kind, state_names). Uses torch's legacy (TorchScript-based) exporter: the default
dynamo exporter of torch 2.13 needs onnxscript, which we do not depend on.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.acoustic import AcousticModel

ONNX_FILE = "encoder.onnx"
OPSET = 17


class _StepGraph(nn.Module):
    """step(features, state) with the state dict flattened into positional tensors."""

    def __init__(self, model: AcousticModel, names: list[str]):
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, features: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out, new = self.model.step(features, dict(zip(self.names, states, strict=True)))
        return (out, *(new[n] for n in self.names))


def weights_digest(bundle: Any) -> str:
    """Which weights an encoder.onnx was exported from (a stale export is redone)."""
    import hashlib

    from models.bundle import WEIGHTS

    return hashlib.sha256((Path(bundle.path) / WEIGHTS).read_bytes()).hexdigest()


def is_current(bundle: Any, path: Path) -> bool:
    """True when the ONNX file at `path` was exported from this bundle's weights."""
    import onnx

    try:
        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    except Exception:  # noqa: BLE001 - unreadable: export again
        return False
    return meta.get("weights_sha256") == weights_digest(bundle)


def state_names(model: Any) -> list[str]:
    return list(model.init_state(1))


def export_onnx(bundle: Any, out: str | Path | None = None, *, opset: int = OPSET) -> Path:
    """Write the bundle's streaming step as ONNX (default: <bundle>/encoder.onnx), atomically:
    exported and given its metadata under a temporary name, then renamed into place, so a
    reader (another server worker exporting the same bundle on first use) never opens a file
    half written or still without its metadata."""
    try:
        import onnx
    except ImportError as exc:
        raise RuntimeError("ONNX export needs the onnx package: pip install 'chorus-asr[export]'") from exc

    model = bundle.model.eval()
    path = Path(out) if out is not None else Path(bundle.path) / ONNX_FILE
    names = state_names(model)
    chunk = bundle.decoding.chunk_frames
    feats = torch.zeros(2, chunk + model.lookahead_frames, bundle.features.num_mel_bins)
    state = model.init_state(2)
    inputs = ["features", *(f"state_{n}" for n in names)]
    outputs = ["outputs", *(f"new_state_{n}" for n in names)]
    axes: dict[str, dict[int, str]] = {"features": {0: "batch", 1: "frames"},
                                       "outputs": {0: "batch", 1: "out_frames"}}
    for n in names:
        axes[f"state_{n}"] = {0: "batch"}
        axes[f"new_state_{n}"] = {0: "batch"}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer warns about the chunk-size check and the RNN's batch handling: both are
        # covered by the dynamic axes and by the parity tests over other batch / chunk sizes
        warnings.simplefilter("ignore")
        torch.onnx.export(_StepGraph(model, names).eval(), (feats, *(state[n] for n in names)), str(tmp),
                          input_names=inputs, output_names=outputs, dynamic_axes=axes,
                          opset_version=opset, dynamo=False)
    proto = onnx.load(str(tmp))
    meta = {"chunk_frames": chunk, "lookahead_frames": model.lookahead_frames,
            "subsampling": model.subsampling, "output_kind": model.output_kind,
            "state_names": json.dumps(names), "vocab_size": bundle.tokenizer.vocab_size,
            "weights_sha256": weights_digest(bundle)}
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, str(v)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)  # atomic on one filesystem
    return path
