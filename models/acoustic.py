"""The acoustic model: streaming encoder + head, with the streaming-step contract (DESIGN 3.2).

`init_state(batch)`, `step(features, state) -> (outputs, state)`, `forward(features, lengths)`,
and static facts (subsampling, lookahead frames, output kind). Heads plug in behind one
interface: encoder outputs (B, T', D) -> head outputs (B, T', X):
- ctc, gram_ctc: log-probs over blank + tokens (output kind "log_probs");
- rnnt: the encoder projected into the joiner space (output kind "encoder"); the per-stream
  decoder runs the head's predictor and joiner (models.nn.transducer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from models.nn.encoder import EncoderConfig, State, StreamingEncoder
from models.nn.transducer import TransducerConfig, TransducerHead

HeadType = Literal["ctc", "gram_ctc", "rnnt"]
HEADS = ("ctc", "gram_ctc", "rnnt")


@dataclass(frozen=True)
class ModelConfig:
    encoder: EncoderConfig
    vocab_size: int
    head: HeadType = "ctc"
    transducer: TransducerConfig | None = None  # rnnt only (None there: the defaults)

    def to_dict(self) -> dict[str, Any]:
        out = {"encoder": self.encoder.to_dict(), "vocab_size": self.vocab_size, "head": self.head}
        if self.head == "rnnt":
            out["transducer"] = (self.transducer or TransducerConfig()).to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        unknown = set(d) - {"encoder", "vocab_size", "head", "transducer"}
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
        head = d.get("head", "ctc")
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        trans = TransducerConfig.from_dict(d.get("transducer") or {}) if head == "rnnt" else None
        return cls(EncoderConfig.from_dict(d["encoder"]), int(d["vocab_size"]), head, trans)


class CtcHead(nn.Module):
    """CTC and Gram-CTC alike: per-frame log-probs over blank + tokens (characters, or
    characters + n-grams for Gram-CTC, whose tokens.txt lists the grams)."""

    output_kind = "log_probs"

    def __init__(self, d_model: int, vocab_size: int):
        super().__init__()
        self.proj = nn.Linear(d_model, vocab_size)

    def forward(self, enc: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.proj(enc), dim=-1)  # (B, T', V)


class AcousticModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = StreamingEncoder(cfg.encoder)
        self.head: CtcHead | TransducerHead
        if cfg.head == "rnnt":
            self.head = TransducerHead(cfg.encoder.d_model, cfg.vocab_size,
                                       cfg.transducer or TransducerConfig())
        else:
            self.head = CtcHead(cfg.encoder.d_model, cfg.vocab_size)

    # static facts
    @property
    def subsampling(self) -> int:
        return self.cfg.encoder.subsampling

    @property
    def lookahead_frames(self) -> int:
        return self.cfg.encoder.lookahead_frames

    @property
    def output_kind(self) -> str:
        return self.head.output_kind

    def init_state(self, batch: int) -> State:
        return self.encoder.init_state(batch)

    def step(self, features: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        enc, state = self.encoder.step(features, state)
        return self.head(enc), state

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        enc, out_lengths = self.encoder(features, lengths)
        return self.head(enc), out_lengths

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
