"""Per-channel energy normalisation (PCEN), streaming-exact.

E: mel energies (T, M). A first-order IIR smoother M_t = (1 - s) M_{t-1} + s E_t (M_{-1} = E_0),
then PCEN_t = (E_t / (eps + M_t)^alpha + delta)^r - delta^r. The smoother state (M,) is
carried across chunks, so chunked PCEN equals whole-utterance PCEN. The smoother, alpha, delta
and r are scalars or one per channel (learned by training.frontend). Written here (not taken
from librosa) because it must run on torch tensors in the streaming feature path.
"""

from __future__ import annotations

import torch

from models.features.config import PcenConfig

PcenState = torch.Tensor  # (M,) smoother value after the last frame


class Pcen:
    def __init__(self, cfg: PcenConfig, *, hop_ms: float):
        self.cfg = cfg
        tau = torch.as_tensor(cfg.time_constant_s, dtype=torch.float64)
        self.s = 1.0 - torch.exp(-hop_ms / 1000.0 / tau)  # () or (M,)
        self.alpha, self.delta, self.r = (torch.as_tensor(v, dtype=torch.float64)
                                          for v in (cfg.alpha, cfg.delta, cfg.r))

    def smooth(self, energies: torch.Tensor, state: PcenState | None) -> torch.Tensor:
        """(T, M) -> (T, M) smoothed energies (the recursion runs in float64)."""
        e = energies.to(torch.float64)
        out = torch.empty_like(e)
        if e.shape[0] == 0:
            return out
        m = e[0] if state is None else state
        for t in range(e.shape[0]):
            m = (1.0 - self.s) * m + self.s * e[t]
            out[t] = m
        return out

    def __call__(
        self, energies: torch.Tensor, state: PcenState | None = None
    ) -> tuple[torch.Tensor, PcenState | None]:
        if energies.shape[0] == 0:
            return energies, state
        smoothed = self.smooth(energies, None if state is None else state.to(torch.float64))
        e = energies.to(torch.float64)
        out = (e / (self.cfg.eps + smoothed) ** self.alpha + self.delta) ** self.r - self.delta**self.r
        return out.to(energies.dtype), smoothed[-1].clone()
