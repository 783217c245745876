"""Trainable PCEN front end (Wang et al. 2017, "Trainable frontend for robust and far-field
keyword spotting"; used in Battenberg et al. 2017, "Reducing bias in production speech models").

`chorus train ... frontend=pcen`: the training batches carry mel energies (T, M) instead of
log-mel features; this module turns them into PCEN features with per-channel parameters that
train with the model, and the exported bundle records the learned values in its feature config
(compression "pcen", one value per channel), so serving computes the same PCEN, streaming-exact,
with models.features.pcen. Parameters live in log space (positive by construction; alpha and r
are also kept <= 1), the smoother coefficient s through a logit, as in the paper. The smoother
is the same first-order recursion as serving's (M_{-1} = E_0), run frame by frame over the
batch: exact, and cheap next to the encoder at 100 frames per second.
"""

from __future__ import annotations

import torch
from torch import nn

from models.features.config import FbankConfig, PcenConfig

FRONTENDS = ("log", "pcen")


class TrainablePcen(nn.Module):
    def __init__(self, channels: int, init: PcenConfig, hop_ms: float):
        super().__init__()
        self.hop_ms, self.eps = hop_ms, init.eps

        def per_channel(value: float | tuple[float, ...]) -> torch.Tensor:
            v = torch.as_tensor(value, dtype=torch.float32)
            return v.expand(channels).clone() if v.dim() == 0 else v.clone()

        s = 1.0 - torch.exp(-hop_ms / 1000.0 / per_channel(init.time_constant_s))
        self.logit_s = nn.Parameter(torch.log(s / (1 - s)))  # (M,)
        self.log_alpha = nn.Parameter(per_channel(init.alpha).log())
        self.log_delta = nn.Parameter(per_channel(init.delta).log())
        self.log_r = nn.Parameter(per_channel(init.r).log())

    def values(self) -> tuple[torch.Tensor, ...]:
        """(s, alpha, delta, r), each (M,)."""
        return (torch.sigmoid(self.logit_s), self.log_alpha.exp().clamp(max=1.0),
                self.log_delta.exp(), self.log_r.exp().clamp(max=1.0))

    def forward(self, energies: torch.Tensor) -> torch.Tensor:
        """(B, T, M) mel energies -> (B, T, M) PCEN features."""
        s, alpha, delta, r = self.values()
        m = energies[:, 0]  # (B, M)
        smoothed = []
        for t in range(energies.shape[1]):
            m = (1 - s) * m + s * energies[:, t]
            smoothed.append(m)
        sm = torch.stack(smoothed, dim=1) if smoothed else energies
        return (energies / (self.eps + sm) ** alpha + delta) ** r - delta**r

    def config(self) -> PcenConfig:
        """The learned values as a serving PcenConfig (one value per channel)."""
        s, alpha, delta, r = (v.detach().double() for v in self.values())
        tau = -self.hop_ms / 1000.0 / torch.log1p(-s)

        def tup(v: torch.Tensor) -> tuple[float, ...]:
            return tuple(float(x) for x in v)

        return PcenConfig(time_constant_s=tup(tau), alpha=tup(alpha), delta=tup(delta),
                          r=tup(r), eps=self.eps)


def serving_features(base: FbankConfig, frontend: TrainablePcen | None) -> FbankConfig:
    """The feature config a bundle records: log-mel as trained, or the learned PCEN."""
    from dataclasses import replace

    if frontend is None:
        return base
    return replace(base, compression="pcen", pcen=frontend.config())
