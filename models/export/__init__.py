"""Exporters: ONNX (encoder step with explicit streaming state) and TensorRT engines from it."""
