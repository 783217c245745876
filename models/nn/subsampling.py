"""Causal conv subsampling (x4): two Conv2d(k=3, stride=2) over (time, freq).

Causal in time: each layer is left-padded by (kernel - stride) = 1 frame, which in streaming is
the cached last input frame of the previous chunk. Chunks must hold a multiple of 4 frames;
then chunked output equals whole-utterance output exactly.
"""

from __future__ import annotations

import torch
from torch import nn

KERNEL = 3
STRIDE = 2
CACHE_FRAMES = KERNEL - STRIDE  # left context each layer keeps
SUBSAMPLING = STRIDE * STRIDE


def conv_out(n: int) -> int:
    return (n - KERNEL) // STRIDE + 1


class ConvSubsampling(nn.Module):
    def __init__(self, num_mel_bins: int, channels: int, d_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, KERNEL, STRIDE)
        self.conv2 = nn.Conv2d(channels, channels, KERNEL, STRIDE)
        self.f1 = conv_out(num_mel_bins)
        self.f2 = conv_out(self.f1)
        self.channels = channels
        self.proj = nn.Linear(channels * self.f2, d_out)

    def init_cache(self, batch: int, num_mel_bins: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.zeros(batch, 1, CACHE_FRAMES, num_mel_bins),  # (B, 1, 1, F)
                torch.zeros(batch, self.channels, CACHE_FRAMES, self.f1))  # (B, C, 1, F1)

    def forward(
        self, x: torch.Tensor, cache1: torch.Tensor, cache2: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, F), T % 4 == 0 -> (B, T/4, d_out), new caches."""
        x = torch.cat([cache1, x.unsqueeze(1)], dim=2)  # (B, 1, 1 + T, F)
        new1 = x[:, :, x.shape[2] - CACHE_FRAMES :]
        x = torch.relu(self.conv1(x))  # (B, C, T/2, F1)
        x = torch.cat([cache2, x], dim=2)  # (B, C, 1 + T/2, F1)
        new2 = x[:, :, x.shape[2] - CACHE_FRAMES :]
        x = torch.relu(self.conv2(x))  # (B, C, T/4, F2)
        b, c, t, f = x.shape
        x = x.transpose(1, 2).reshape(b, t, c * f)  # (B, T/4, C * F2)
        return self.proj(x), new1, new2
