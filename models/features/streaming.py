"""Streaming fbank: feed samples in any chunking, get exactly the offline frames.

Keeps the samples not yet covered by a complete frame; every emitted frame is computed by the
same `Fbank` steps as offline. The PCEN smoother state (when used) is carried across calls.
The framing is a numpy strided view of the samples kept and the new ones.
"""

from __future__ import annotations

import numpy as np
import torch

from models.features.config import FbankConfig
from models.features.fbank import Fbank
from models.features.pcen import PcenState


class StreamingFbank:
    def __init__(self, cfg: FbankConfig | None = None, *, fbank: Fbank | None = None):
        self.fbank = fbank or Fbank(cfg)
        self.cfg = self.fbank.cfg
        self.np_dtype = torch.empty(0, dtype=self.fbank.dtype).numpy().dtype
        self.reset()

    def reset(self) -> None:
        self._pending = np.zeros(0, dtype=self.np_dtype)  # (P,) samples, int16 scale
        self._pcen_state: PcenState | None = None
        self.frames_emitted = 0
        self.samples_accepted = 0

    @property
    def pending_samples(self) -> int:
        return int(self._pending.shape[0])

    def accept(self, samples: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Float samples (S,) in [-1, 1] -> newly complete frames (T_new, num_mel_bins)."""
        x = samples.detach().cpu().numpy() if isinstance(samples, torch.Tensor) else \
            np.asarray(samples)
        if x.ndim != 1:
            raise ValueError(f"StreamingFbank.accept expects (S,) samples, got {tuple(x.shape)}")
        cfg = self.cfg
        self.samples_accepted += int(x.shape[0])
        buf = np.concatenate([self._pending, x.astype(self.np_dtype) * self.np_dtype.type(
            cfg.input_scale)])
        n = cfg.num_frames(int(buf.shape[0]))
        if n == 0:
            self._pending = buf
            return torch.zeros((0, cfg.num_mel_bins), dtype=self.fbank.dtype)
        step = buf.strides[0]  # buf is a fresh contiguous array: the view stays inside it
        frames = np.lib.stride_tricks.as_strided(
            buf, (n, cfg.window_samples), (cfg.hop_samples * step, step))
        self._pending = buf[n * cfg.hop_samples :].copy()
        self.frames_emitted += n
        feats, self._pcen_state = self.fbank.compress(
            self.fbank.mel_energies(torch.from_numpy(frames)), self._pcen_state
        )
        return feats
