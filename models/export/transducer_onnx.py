"""Export an RNN-T bundle's predictor and joiner to ONNX (the encoder goes through
models.export.onnx like any head: its step outputs joiner-space frames).

predictor.onnx: tokens (B,) int64 + state_<name> -> pred (B, J) + new_state_<name>
  (LSTM: state h, c (1, B, P); stateless: state tokens (B, context) int64)
joiner.onnx:    enc (N, J), pred (N, J) -> log_probs (N, V)
A runtime that wants no torch at all decodes with these two plus encoder.onnx; the server's
decoders use the bundle's torch head (the same weights; parity is tested).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.nn.transducer import batch_dim

PREDICTOR_FILE = "predictor.onnx"
JOINER_FILE = "joiner.onnx"


class _Predictor(nn.Module):
    def __init__(self, head: Any, names: list[str]):
        super().__init__()
        self.head, self.names = head, names

    def forward(self, tokens: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pred, new = self.head.predict(tokens, dict(zip(self.names, state, strict=True)))
        return (pred, *(new[n] for n in self.names))


class _Joiner(nn.Module):
    def __init__(self, head: Any):
        super().__init__()
        self.head = head

    def forward(self, enc: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        return self.head.join(enc, pred)


def export_transducer(bundle: Any, out_dir: str | Path | None = None, *,
                      opset: int = 17) -> tuple[Path, Path]:
    head = bundle.model.head
    if bundle.model.output_kind != "encoder":
        raise ValueError(f"{bundle.path}: not an RNN-T bundle (head {bundle.model.cfg.head})")
    out = Path(out_dir) if out_dir is not None else Path(bundle.path)
    out.mkdir(parents=True, exist_ok=True)
    head = head.eval()
    state = head.init_pred_state(2)
    names = list(state)
    tokens = torch.tensor([1, 2])
    axes: dict[str, dict[int, str]] = {"tokens": {0: "batch"}, "pred": {0: "batch"}}
    for n in names:
        axes[f"state_{n}"] = {batch_dim(n): "batch"}
        axes[f"new_state_{n}"] = {batch_dim(n): "batch"}
    pred_path, join_path = out / PREDICTOR_FILE, out / JOINER_FILE
    j = head.cfg.joiner_dim
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Predictor(head, names).eval(), (tokens, *(state[n] for n in names)),
                          str(pred_path), input_names=["tokens", *(f"state_{n}" for n in names)],
                          output_names=["pred", *(f"new_state_{n}" for n in names)],
                          dynamic_axes=axes, opset_version=opset, dynamo=False)
        torch.onnx.export(_Joiner(head).eval(), (torch.zeros(3, j), torch.zeros(3, j)),
                          str(join_path), input_names=["enc", "pred"],
                          output_names=["log_probs"],
                          dynamic_axes={"enc": {0: "n"}, "pred": {0: "n"}, "log_probs": {0: "n"}},
                          opset_version=opset, dynamo=False)
    return pred_path, join_path
