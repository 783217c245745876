"""int8 inference on CPU: dynamic quantization of the acoustic model's GRU / LSTM and Linear layers.

What it is: weights stored as int8 (per tensor), activations quantized on the fly at each call,
products accumulated in int32 by fbgemm / oneDNN (torch's `quantize_dynamic`). It is what
sherpa-onnx's `*.int8.onnx` models are, for the recurrent encoder this repository ships: a
training-free conversion, 4x smaller weights and, measured in docs/RESULTS.md (session 20), a
model step 2-4x cheaper than fp32 and 1.25-1.5x the streams per core of onnxruntime's fp32.

Why torch and not onnxruntime: onnxruntime's dynamic quantizer has kernels for MatMul, Conv and
LSTM but none for GRU, so an int8 ONNX export would leave the GRU (most of the FLOPs) in fp32.

What it costs: outputs are close to fp32, not equal (accuracy measured in RESULTS), and since
each call quantizes its activations with one range per tensor, a stream's outputs depend
slightly on which other streams share its batch and on how the audio is chunked. The exactness
the fp32 paths guarantee (streaming == offline, batched == alone) holds only approximately.

`torch.ao.quantization.quantize_dynamic` is marked deprecated (its successor is torchao, not a
dependency here); it works in the pinned torch and its warning is silenced here only.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

INT8_LAYERS = (nn.GRU, nn.LSTM, nn.Linear)


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of `model` (eval mode, CPU) whose GRU / LSTM / Linear layers run in int8; the
    original is untouched. Raises ValueError when the model has none of them."""
    if not any(isinstance(m, INT8_LAYERS) for m in model.modules()):
        raise ValueError("int8: the model has no GRU, LSTM or Linear layer to quantize")
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("int8 runs on CPU only (dynamic int8 kernels: fbgemm / oneDNN); "
                         "on a GPU use TensorRT fp16")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor", category=UserWarning)
        return torch.ao.quantization.quantize_dynamic(model.eval(), set(INT8_LAYERS),
                                                      dtype=torch.qint8)
