"""Streaming fbank: feed samples in any chunking, get exactly the offline frames.

Keeps the samples not yet covered by a complete frame; every emitted frame is computed by the
same `Fbank` steps as offline. The PCEN smoother state (when used) is carried across calls.
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
        self.reset()

    def reset(self) -> None:
        self._pending = torch.zeros(0, dtype=self.fbank.dtype)  # (P,) samples, int16 scale
        self._pcen_state: PcenState | None = None
        self.frames_emitted = 0
        self.samples_accepted = 0

    @property
    def pending_samples(self) -> int:
        return int(self._pending.shape[0])

    def accept_frames(self, samples: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Float samples (S,) in [-1, 1] -> the newly complete frames (T_new, W), at int16
        scale and not yet transformed: `Fbank.mel_energies` + compression make them features
        (the server batches that part for many streams: server/dispatch.py)."""
        x = torch.as_tensor(samples)
        if x.dim() != 1:
            raise ValueError(f"StreamingFbank.accept expects (S,) samples, got {tuple(x.shape)}")
        self.samples_accepted += int(x.shape[0])
        buf = torch.cat([self._pending, x.to(self.fbank.dtype) * self.cfg.input_scale])
        n = self.cfg.num_frames(int(buf.shape[0]))
        if n == 0:
            self._pending = buf
            return buf.new_zeros((0, self.cfg.window_samples))
        frames = self.fbank.frame(buf)  # (n, W)
        self._pending = buf[n * self.cfg.hop_samples :].clone()
        self.frames_emitted += n
        return frames

    def accept(self, samples: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Float samples (S,) in [-1, 1] -> newly complete frames (T_new, num_mel_bins)."""
        frames = self.accept_frames(samples)
        if frames.shape[0] == 0:
            return frames.new_zeros((0, self.cfg.num_mel_bins))
        feats, self._pcen_state = self.fbank.compress(
            self.fbank.mel_energies(frames), self._pcen_state
        )
        return feats
