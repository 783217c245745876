"""PyTorch backend: the bundle's model in eval mode on CPU (or CUDA when asked and present);
with `int8`, a dynamically quantized copy of it (models/quantize.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from models.backends.base import BackendConfig, BackendUnavailable, zero_state


class TorchBackend:
    name = "torch"

    def __init__(self, bundle: Any, cfg: BackendConfig):
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(
                "torch backend on cuda: torch.cuda.is_available() is False (this torch build "
                f"{torch.__version__} has no CUDA or there is no GPU); install a CUDA build of "
                "torch (.ci/constraints-gpu.txt) on a GPU machine, or use device=cpu")
        if cfg.device == "cpu":
            torch.set_num_threads(cfg.threads)
        self.bundle = bundle
        self.device = torch.device(cfg.device)
        self.model = bundle.model.to(self.device).eval()
        if cfg.int8:
            from models.quantize import quantize_int8

            self.model = quantize_int8(self.model)
        self.state_names = list(self.model.init_state(1))

    def init_state(self, batch: int) -> dict[str, np.ndarray]:
        return zero_state(self.bundle, batch)

    @torch.inference_mode()
    def step(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        dev = self.device
        feats = torch.from_numpy(inputs["features"]).to(dev)
        state = {n: torch.from_numpy(inputs[f"state_{n}"]).to(dev) for n in self.state_names}
        out, new = self.model.step(feats, state)
        result = {"outputs": out.float().cpu().numpy()}
        result.update({f"new_state_{n}": new[n].float().cpu().numpy() for n in self.state_names})
        return result
