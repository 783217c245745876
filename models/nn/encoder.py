"""Forward-only streaming encoder (Deep Speech 2 style, unidirectional).

features (B, T, F) -> CMVN (global, or online: a running per-stream mean) -> causal conv
subsampling x s (4, 2 or 8) -> the body: unidirectional GRU/LSTM layers (arch "rnn") or causal
Conformer layers (arch "conformer", models.nn.conformer) -> row convolution over tau future
frames -> LayerNorm -> (B, T/s, D).

`step` and `forward` share `_advance` (conv + body from a state). Lookahead comes in on the input
side: a step gets T_chunk + s * tau frames; the chunk part advances (and commits) the state, the
lookahead part runs from the committed state only to feed the row convolution. `forward` is the
same computation over the whole (zero-padded) utterance, so the two agree to float rounding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

from models.nn.conformer import ConformerStack
from models.nn.rowconv import RowConv
from models.nn.subsampling import SUBSAMPLING, ConvSubsampling

State = dict[str, torch.Tensor]
ARCHS = ("rnn", "conformer")
CMN = ("global", "online")
CONFORMER_STATE = ("att_k", "att_v", "att_valid", "conv")  # models.nn.conformer's state keys


@dataclass(frozen=True)
class EncoderConfig:
    num_mel_bins: int = 80
    conv_channels: int = 32
    d_model: int = 256
    num_layers: int = 3
    rnn: Literal["gru", "lstm"] = "gru"
    lookahead: int = 2  # tau, in subsampled frames (x 10 ms x subsampling)
    dropout: float = 0.1
    subsampling: int = SUBSAMPLING  # 4 (40 ms frames), 2 (20 ms) or 8 (80 ms)
    arch: Literal["rnn", "conformer"] = "rnn"  # the body: `rnn` layers, or causal Conformer
    heads: int = 4  # conformer: attention heads
    ff_mult: int = 4  # conformer: feed-forward width / d_model
    conv_kernel: int = 15  # conformer: causal depthwise convolution, frames (the past K - 1)
    left_context: int = 64  # conformer: output frames of cached left context per attention
    # feature normalisation: "global" (the training set's mean and std) or "online": the mean
    # of the stream's own frames so far (frame t by frames 0..t, causal), with the global mean
    # counted as `cmn_prior_frames` frames of prior, then the global std (Kaldi's online CMN
    # with global stats as its prior, cumulative rather than windowed)
    cmn: Literal["global", "online"] = "global"
    cmn_prior_frames: int = 100

    @property
    def lookahead_frames(self) -> int:
        """Input (10 ms) frames of lookahead a step needs beyond its chunk."""
        return self.lookahead * self.subsampling

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown EncoderConfig fields: {sorted(unknown)}")
        return cls(**d)


class StreamingEncoder(nn.Module):
    feat_mean: torch.Tensor  # (F,) global CMVN mean (a buffer, saved with the weights)
    feat_std: torch.Tensor  # (F,)

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("feat_mean", torch.zeros(cfg.num_mel_bins))
        self.register_buffer("feat_std", torch.ones(cfg.num_mel_bins))
        self.subsampling = ConvSubsampling(cfg.num_mel_bins, cfg.conv_channels, cfg.d_model,
                                           cfg.subsampling)
        if cfg.cmn not in CMN or cfg.cmn_prior_frames < 1:
            raise ValueError(f"encoder cmn must be one of {CMN} with cmn_prior_frames >= 1, got "
                             f"{cfg.cmn!r}, {cfg.cmn_prior_frames}")
        if cfg.arch not in ARCHS:
            raise ValueError(f"encoder arch must be one of {ARCHS}, got {cfg.arch!r}")
        if cfg.arch == "conformer":
            self.conformer = ConformerStack(cfg.d_model, cfg.num_layers, cfg.heads, cfg.ff_mult,
                                            cfg.conv_kernel, cfg.left_context, cfg.dropout)
        else:
            rnn_cls = nn.GRU if cfg.rnn == "gru" else nn.LSTM
            self.rnn = rnn_cls(cfg.d_model, cfg.d_model, cfg.num_layers, batch_first=True,
                               dropout=cfg.dropout if cfg.num_layers > 1 else 0.0)
        self.rowconv = RowConv(cfg.d_model, cfg.lookahead)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    # ---- state -----------------------------------------------------------------------------
    def init_state(self, batch: int) -> State:
        c1, c2 = self.subsampling.init_cache(batch, self.cfg.num_mel_bins)
        state = {"conv1": c1, "conv2": c2}
        if self.cfg.arch == "conformer":
            state.update(self.conformer.init_state(batch))
        else:
            h = torch.zeros(batch, self.cfg.num_layers, self.cfg.d_model)  # (B, L, D)
            state["rnn_h"] = h
            if self.cfg.rnn == "lstm":
                state["rnn_c"] = torch.zeros_like(h)
        if self.cfg.cmn == "online":  # raw-feature sum and count of the stream's frames so far
            state["cmn_sum"] = torch.zeros(batch, self.cfg.num_mel_bins)  # (B, F)
            state["cmn_count"] = torch.zeros(batch, 1)  # (B, 1)
        dev = self.feat_mean.device
        return {k: v.to(dev) for k, v in state.items()}

    def set_normalizer(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.feat_mean.copy_(mean)
        self.feat_std.copy_(std.clamp(min=1e-3))

    @property
    def pad_frame(self) -> torch.Tensor:
        """The raw feature frame ends of streams are padded with (the global mean: zero after
        global CMVN; online CMN centres it on the stream's running mean like any frame)."""
        return self.feat_mean

    # ---- shared core -------------------------------------------------------------------------
    def _advance(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Normalised x (B, T, F), T % s == 0 -> body outputs (B, T/s, D), new state."""
        y, c1, c2 = self.subsampling(x, state["conv1"], state["conv2"])
        y = self.dropout(y)
        if self.cfg.arch == "conformer":
            y, new_body = self.conformer(y, {k: state[k] for k in CONFORMER_STATE})
            return y, {"conv1": c1, "conv2": c2, **new_body}
        h0 = state["rnn_h"].transpose(0, 1).contiguous()  # (L, B, D)
        if self.cfg.rnn == "lstm":
            c0 = state["rnn_c"].transpose(0, 1).contiguous()
            y, (h, c) = self.rnn(y, (h0, c0))
            new = {"conv1": c1, "conv2": c2, "rnn_h": h.transpose(0, 1), "rnn_c": c.transpose(0, 1)}
        else:
            y, h = self.rnn(y, h0)
            new = {"conv1": c1, "conv2": c2, "rnn_h": h.transpose(0, 1)}
        return y, new

    def _finish(self, h: torch.Tensor) -> torch.Tensor:
        """Body outputs (B, T' + tau, D) -> encoder outputs (B, T', D)."""
        return self.norm(self.dropout(self.rowconv(h)))

    def normalize(self, x: torch.Tensor, state: State | None = None,
                  commit: int | None = None) -> tuple[torch.Tensor, State]:
        """Raw x (B, T, F) -> normalised (B, T, F) and the normaliser's state after the first
        `commit` frames (all when None; empty for global CMVN). Online: frame t is centred on
        (prior * global mean + sum of frames <= t) / (prior + t + 1 frames), so a frame's value
        never depends on later frames and chunking cannot change it."""
        if self.cfg.cmn == "global":
            return (x - self.feat_mean) / self.feat_std, {}
        b, t, _ = x.shape
        if state is None:
            state = {"cmn_sum": x.new_zeros(b, x.shape[2]), "cmn_count": x.new_zeros(b, 1)}
        sums = state["cmn_sum"][:, None] + torch.cumsum(x, dim=1)  # (B, T, F)
        counts = state["cmn_count"][:, None] + torch.arange(
            1, t + 1, device=x.device, dtype=x.dtype)[None, :, None]  # (B, T, 1)
        prior = float(self.cfg.cmn_prior_frames)
        mean = (prior * self.feat_mean + sums) / (prior + counts)
        k = (t if commit is None else commit) - 1
        return (x - mean) / self.feat_std, {"cmn_sum": sums[:, k], "cmn_count": counts[:, k]}

    # ---- streaming ---------------------------------------------------------------------------
    def step(self, features: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """features (B, T + s tau, F) raw fbank, T % s == 0 -> (B, T / s, D), new state (s: subsampling)."""
        la = self.cfg.lookahead_frames
        t = features.shape[1] - la
        sub = self.cfg.subsampling
        if t <= 0 or t % sub:
            raise ValueError(f"step needs T + {la} frames with T a positive multiple of "
                             f"{sub}; got {features.shape[1]} frames")
        x, cmn_state = self.normalize(features, state, commit=t)
        h_chunk, new_state = self._advance(x[:, :t], state)
        if la:
            h_look, _ = self._advance(x[:, t:], new_state)
            h_chunk = torch.cat([h_chunk, h_look], dim=1)
        return self._finish(h_chunk), {**new_state, **cmn_state}

    # ---- whole utterance ---------------------------------------------------------------------
    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, T, F), lengths (B,) -> outputs (B, ceil(T/s), D), output lengths (B,).

        Frames past each length, the tail up to a multiple of s and the lookahead are the raw
        pad frame, exactly what a stream is padded with when it ends, normalised alike.
        """
        b, t, _ = features.shape
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long, device=features.device)
        mask = torch.arange(t, device=features.device)[None, :] < lengths[:, None]  # (B, T)
        sub = self.cfg.subsampling
        t_out = -(-t // sub)
        pad = t_out * sub - t + self.cfg.lookahead_frames
        raw = torch.where(mask[..., None], features, self.pad_frame)
        raw = torch.cat([raw, self.pad_frame.expand(b, pad, -1)], dim=1)  # (B, s (T' + tau), F)
        x, _ = self.normalize(raw)
        h, _ = self._advance(x, self.init_state(b))
        out = self._finish(h)  # (B, T', D)
        return out, -(-lengths // sub)
