"""Causal Conformer layers for the streaming encoder (Gulati et al. 2020, made forward-only).

Each layer: half-step feed-forward -> causal self-attention over a window of cached left
context -> causal convolution module (pointwise + GLU, depthwise over the past `kernel - 1`
frames, LayerNorm, SiLU, pointwise) -> half-step feed-forward -> LayerNorm, each a residual.

Streaming exactness for *any* chunking is the design constraint (the encoder's `step` ==
`forward` contract, and Batch Dispatch steps of any size): a frame attends to itself and the
`left` frames before it, never to later frames of its chunk, so no result depends on where a
chunk boundary falls. Future context comes in after the stack, as for the recurrent encoder
(the row convolution over tau frames). Positions: a learned bias per head and relative offset
(0..left) added to the attention logits, which is invariant to the absolute position and so to
how long the stream has run; the causal convolution adds local order too.

State per stream (batch on dim 0): keys and values of the last `left` frames of every layer,
a 0/1 mask of which cached frames exist (a new stream has none), and every layer's last
`kernel - 1` convolution inputs.
"""

from __future__ import annotations

import torch
from torch import nn

State = dict[str, torch.Tensor]
NEG = -1e4  # masked logit (finite: a fully masked row still gives finite numbers)


class _FeedForward(nn.Module):
    def __init__(self, d: int, mult: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, mult * d), nn.SiLU(),
                                 nn.Dropout(dropout), nn.Linear(mult * d, d), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CausalAttention(nn.Module):
    def __init__(self, d: int, heads: int, left: int, dropout: float):
        super().__init__()
        if d % heads:
            raise ValueError(f"d_model {d} must be a multiple of attention heads {heads}")
        self.heads, self.left, self.dk = heads, left, d // heads
        self.norm = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.rel_bias = nn.Parameter(torch.zeros(heads, left + 1))  # per head, offset 0..left
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, D); caches (B, W, D) with W = left; valid (B, W) 0/1 ->
        (B, T, D), new caches (B, W, D)."""
        b, t, d = x.shape
        w = self.left
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=-1)  # (B, T, D) each
        keys = torch.cat([k_cache, k], dim=1)  # (B, W + T, D)
        vals = torch.cat([v_cache, v], dim=1)
        h, dk = self.heads, self.dk
        qh = q.reshape(b, t, h, dk).transpose(1, 2)  # (B, H, T, dk)
        kh = keys.reshape(b, w + t, h, dk).transpose(1, 2)  # (B, H, W + T, dk)
        vh = vals.reshape(b, w + t, h, dk).transpose(1, 2)
        logits = qh @ kh.transpose(-1, -2) / dk ** 0.5  # (B, H, T, W + T)
        # query i sits at position W + i of the keys; offset = (W + i) - j, allowed 0..W
        offset = (w + torch.arange(t, device=x.device))[:, None] - torch.arange(w + t, device=x.device)
        allowed = (offset >= 0) & (offset <= w)  # (T, W + T)
        bias = self.rel_bias[:, offset.clamp(0, w)]  # (H, T, W + T)
        key_ok = torch.cat([valid, torch.ones(b, t, dtype=valid.dtype, device=x.device)], dim=1)
        mask = allowed[None, None] & (key_ok[:, None, None, :] > 0.5)  # (B, 1, T, W + T)
        logits = torch.where(mask, logits + bias, torch.full_like(logits, NEG))
        att = self.dropout(torch.softmax(logits, dim=-1))
        y = (att @ vh).transpose(1, 2).reshape(b, t, d)
        return self.dropout(self.out(y)), keys[:, t:], vals[:, t:]


class CausalConvModule(nn.Module):
    def __init__(self, d: int, kernel: int, dropout: float):
        super().__init__()
        self.kernel = kernel
        self.norm = nn.LayerNorm(d)
        self.pw1 = nn.Linear(d, 2 * d)
        self.depthwise = nn.Conv1d(d, d, kernel, groups=d)
        self.dw_norm = nn.LayerNorm(d)
        self.pw2 = nn.Linear(d, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), cache (B, D, K - 1) -> (B, T, D), new cache."""
        y = nn.functional.glu(self.pw1(self.norm(x)), dim=-1).transpose(1, 2)  # (B, D, T)
        y = torch.cat([cache, y], dim=2)  # (B, D, K - 1 + T)
        new_cache = y[:, :, y.shape[2] - (self.kernel - 1):]
        y = self.depthwise(y).transpose(1, 2)  # (B, T, D)
        y = self.pw2(nn.functional.silu(self.dw_norm(y)))
        return self.dropout(y), new_cache


class ConformerLayer(nn.Module):
    def __init__(self, d: int, heads: int, ff_mult: int, kernel: int, left: int, dropout: float):
        super().__init__()
        self.ff1 = _FeedForward(d, ff_mult, dropout)
        self.attn = CausalAttention(d, heads, left, dropout)
        self.conv = CausalConvModule(d, kernel, dropout)
        self.ff2 = _FeedForward(d, ff_mult, dropout)
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor,
                conv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = x + 0.5 * self.ff1(x)
        a, k, v = self.attn(x, k, v, valid)
        x = x + a
        c, conv = self.conv(x, conv)
        x = x + c
        x = x + 0.5 * self.ff2(x)
        return self.norm(x), k, v, conv


class ConformerStack(nn.Module):
    """`num_layers` causal Conformer layers; state keys att_k, att_v (B, L, W, D), att_valid
    (B, W), conv (B, L, D, K - 1)."""

    def __init__(self, d: int, num_layers: int, heads: int, ff_mult: int, kernel: int,
                 left: int, dropout: float):
        super().__init__()
        if kernel < 2 or left < 1:
            raise ValueError(f"conv_kernel must be >= 2 and left_context >= 1, got {kernel}, {left}")
        self.d, self.left, self.kernel = d, left, kernel
        self.layers = nn.ModuleList(ConformerLayer(d, heads, ff_mult, kernel, left, dropout)
                                    for _ in range(num_layers))

    def init_state(self, batch: int) -> State:
        n, w, d = len(self.layers), self.left, self.d
        return {"att_k": torch.zeros(batch, n, w, d), "att_v": torch.zeros(batch, n, w, d),
                "att_valid": torch.zeros(batch, w),
                "conv": torch.zeros(batch, n, d, self.kernel - 1)}

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """x (B, T, D) -> (B, T, D), new state."""
        ks, vs, convs = [], [], []
        valid = state["att_valid"]
        for i, layer in enumerate(self.layers):
            x, k, v, c = layer(x, state["att_k"][:, i], state["att_v"][:, i], valid,
                               state["conv"][:, i])
            ks.append(k)
            vs.append(v)
            convs.append(c)
        t = x.shape[1]
        ones = torch.ones(valid.shape[0], t, dtype=valid.dtype, device=valid.device)
        new_valid = torch.cat([valid, ones], dim=1)[:, t:]
        return x, {"att_k": torch.stack(ks, 1), "att_v": torch.stack(vs, 1),
                   "att_valid": new_valid, "conv": torch.stack(convs, 1)}
