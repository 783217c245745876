"""Row (lookahead) convolution of Deep Speech 2: y_t = sum_{j=0..tau} w_j * h_{t+j}, per channel.

A depthwise Conv1d with kernel tau + 1 and no padding: given T + tau frames it returns T.
The tau future frames come from the caller (streaming: the lookahead part of the chunk).
"""

from __future__ import annotations

import torch
from torch import nn


class RowConv(nn.Module):
    def __init__(self, channels: int, lookahead: int):
        super().__init__()
        self.lookahead = lookahead
        self.conv = nn.Conv1d(channels, channels, lookahead + 1, groups=channels, bias=False)
        with torch.no_grad():  # start as identity on the current frame
            self.conv.weight.zero_()
            self.conv.weight[:, 0, 0] = 1.0

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h (B, T + tau, D) -> (B, T, D)."""
        if self.lookahead == 0:
            return h
        return self.conv(h.transpose(1, 2)).transpose(1, 2)
