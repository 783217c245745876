"""Cold fusion (Sriram et al. 2017) in the transducer's prediction network.

A frozen, pretrained character LSTM LM (models.lm.neural, `units="char"`) reads the same tokens
as the predictor; its next-token log-probabilities l_lm enter the predictor's output through a
learned gate, as in the paper (with the predictor state s in place of the decoder state):

    h_lm  = ReLU(W_lm l_lm)                 (B, U, F)   F = cfg.dim
    g     = sigmoid(W_g [s; h_lm])          (B, U, F)
    fused = [s; g * h_lm]                   (B, U, P + F)  -> the head's pred_proj -> joiner

The LM is trained first on text alone and never updated here (its parameters are frozen and it
stays in eval mode); the gate and W_lm are learned end to end with the transducer. The LM's
recurrent state (h, c) travels with the predictor's per-hypothesis state (`lm_h`, `lm_c`, each
(1, B, H)), so greedy, beam, batched decoding and the ONNX predictor need nothing new. Swapping
in another LM of the same shape (a target domain's) is a weight copy: `load_lm`.

The paper feeds the LM's logits; log-softmax differs from them by one constant per row, which
the gate's bias cannot tell apart, and is what models.lm.neural computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from models.lm.neural import BOS, NeuralLm, NeuralLmConfig, NeuralLmError

STATE = ("lm_h", "lm_c")  # the LM's part of the predictor state, each (1, B, H)


@dataclass(frozen=True)
class ColdFusionConfig:
    lm: dict[str, Any] = field(default_factory=dict)  # the frozen LM's lm.json (NeuralLmConfig)
    token_map: tuple[int, ...] = ()  # transducer token id -> LM vocabulary id (blank -> <s>)
    dim: int = 256  # F: width of h_lm and of the gate

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ColdFusionConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown ColdFusionConfig fields: {sorted(unknown)}")
        return cls(lm=dict(d.get("lm") or {}), token_map=tuple(int(i) for i in d.get("token_map", ())),
                   dim=int(d.get("dim", 256)))


def token_map(symbols: tuple[str, ...] | list[str], lm: NeuralLm) -> tuple[int, ...]:
    """Each transducer token's id in a character LM's vocabulary: the blank (the predictor's
    start symbol) is <s>; every other symbol must be one of the LM's characters."""
    if lm.cfg.units != "char":
        raise NeuralLmError(f"{getattr(lm, 'path', 'LM')}: cold fusion needs a character LM "
                            f"(chorus lm train --units char), this one has units "
                            f"{lm.cfg.units!r}")
    out = [lm.index[BOS]]
    for sym in symbols[1:]:
        if sym not in lm.index:
            raise NeuralLmError(f"{getattr(lm, 'path', 'LM')}: the model's token {sym!r} is not "
                                f"in the LM's character vocabulary (character units only)")
        out.append(lm.index[sym])
    return tuple(out)


class ColdFusion(nn.Module):
    token_map: torch.Tensor  # (V,) transducer token id -> LM id (a buffer, from the config)

    def __init__(self, cfg: ColdFusionConfig, pred_dim: int, vocab_size: int):
        super().__init__()
        if len(cfg.token_map) != vocab_size:
            raise ValueError(f"cold fusion token_map has {len(cfg.token_map)} entries, the "
                             f"model {vocab_size} tokens")
        lm_cfg = NeuralLmConfig(**cfg.lm)
        if lm_cfg.type != "lstm" or lm_cfg.units != "char":
            raise ValueError(f"cold fusion needs a character LSTM LM, got type {lm_cfg.type!r} "
                             f"units {lm_cfg.units!r}")
        self.cfg = cfg
        self.lm = NeuralLm(lm_cfg)
        self.lm.requires_grad_(False)
        self.register_buffer("token_map", torch.tensor(cfg.token_map, dtype=torch.long),
                             persistent=False)
        self.lm_proj = nn.Linear(len(lm_cfg.vocab), cfg.dim)
        self.gate = nn.Linear(pred_dim + cfg.dim, cfg.dim)
        self.lm.eval()

    @property
    def out_dim(self) -> int:
        return self.gate.in_features

    def train(self, mode: bool = True) -> ColdFusion:
        super().train(mode)
        self.lm.eval()  # frozen: no dropout, ever
        return self

    def init_state(self, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
        h = torch.zeros(1, batch, self.lm.cfg.hidden, device=device)
        return {"lm_h": h, "lm_c": torch.zeros_like(h)}

    def forward(self, s: torch.Tensor, tokens: torch.Tensor,
                state: dict[str, torch.Tensor] | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """s (B, U, P) predictor outputs after tokens (B, U) (blank = start), the LM state
        before them (None: the start) -> fused (B, U, P + F), the LM state after them."""
        lm_state = (state["lm_h"], state["lm_c"]) if state is not None else None
        with torch.no_grad():
            log_probs, (h, c) = self.lm(self.token_map[tokens], None, lm_state)  # (B, U, V_lm)
        h_lm = torch.relu(self.lm_proj(log_probs))  # (B, U, F)
        g = torch.sigmoid(self.gate(torch.cat([s, h_lm], dim=-1)))  # (B, U, F)
        return torch.cat([s, g * h_lm], dim=-1), {"lm_h": h, "lm_c": c}

    def load_lm(self, lm: NeuralLm) -> None:
        """Swap in another trained LM of the same configuration (e.g. a target domain's)."""
        if lm.cfg != self.lm.cfg:
            raise NeuralLmError(f"{getattr(lm, 'path', 'LM')}: its configuration differs from "
                                f"the cold-fused model's LM (same type, units, vocabulary and "
                                f"sizes needed to swap)")
        self.lm.load_state_dict(lm.state_dict())
