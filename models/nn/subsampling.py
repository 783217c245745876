"""Causal conv subsampling: two Conv2d(k=3) over (time, freq), frequency stride 2 each.

Time strides (2, 2) give x4 (40 ms frames, the default) or (2, 1) give x2 (20 ms frames, for
character outputs whose label density is too high at 40 ms); x8 (80 ms, for Gram-CTC, whose
grams need fewer frames) stacks pairs of x4 frames before the projection (no state: a chunk is
a multiple of 8 input frames, so it holds whole pairs). Causal in time: each layer is
left-padded by (kernel - time stride) frames, which in streaming are the cached last input
frames of the previous chunk. Chunks must hold a multiple of the subsampling; then chunked
output equals whole-utterance output exactly.
"""

from __future__ import annotations

import torch
from torch import nn

KERNEL = 3
STRIDE = 2  # frequency stride of both layers
TIME_STRIDES = {4: (2, 2), 2: (2, 1), 8: (2, 2)}  # subsampling -> time stride per layer
STACK = {4: 1, 2: 1, 8: 2}  # conv output frames stacked into one
SUBSAMPLING = 4  # the default


def conv_out(n: int) -> int:
    """Output bins of one layer along frequency."""
    return (n - KERNEL) // STRIDE + 1


class ConvSubsampling(nn.Module):
    def __init__(self, num_mel_bins: int, channels: int, d_out: int, subsampling: int = SUBSAMPLING):
        super().__init__()
        if subsampling not in TIME_STRIDES:
            raise ValueError(f"subsampling must be one of {sorted(TIME_STRIDES)}, got {subsampling}")
        s1, s2 = TIME_STRIDES[subsampling]
        self.cache1, self.cache2 = KERNEL - s1, KERNEL - s2  # left context frames per layer
        self.conv1 = nn.Conv2d(1, channels, KERNEL, (s1, STRIDE))
        self.conv2 = nn.Conv2d(channels, channels, KERNEL, (s2, STRIDE))
        self.f1 = conv_out(num_mel_bins)
        self.f2 = conv_out(self.f1)
        self.channels = channels
        self.stack = STACK[subsampling]
        self.proj = nn.Linear(self.stack * channels * self.f2, d_out)

    def init_cache(self, batch: int, num_mel_bins: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.zeros(batch, 1, self.cache1, num_mel_bins),  # (B, 1, K - s1, F)
                torch.zeros(batch, self.channels, self.cache2, self.f1))  # (B, C, K - s2, F1)

    def forward(
        self, x: torch.Tensor, cache1: torch.Tensor, cache2: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, F), T % subsampling == 0 -> (B, T / subsampling, d_out), new caches."""
        x = torch.cat([cache1, x.unsqueeze(1)], dim=2)  # (B, 1, c1 + T, F)
        new1 = x[:, :, x.shape[2] - self.cache1 :]
        x = torch.relu(self.conv1(x))  # (B, C, T / s1, F1)
        x = torch.cat([cache2, x], dim=2)  # (B, C, c2 + T / s1, F1)
        new2 = x[:, :, x.shape[2] - self.cache2 :]
        x = torch.relu(self.conv2(x))  # (B, C, T / subsampling, F2)
        b, c, t, f = x.shape
        x = x.transpose(1, 2).reshape(b, t // self.stack, self.stack * c * f)  # (B, T/s, k C F2)
        return self.proj(x), new1, new2
