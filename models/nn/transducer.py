"""RNN-T head (Graves 2012): prediction network + joiner over the streaming encoder.

- encoder frames (B, T', D) -> `enc_proj` -> (B, T', J): what a streaming step outputs
  (output kind "encoder"); the decoder runs the predictor and joiner per stream.
- predictor: embedding (the blank id doubles as start-of-sequence) + one LSTM layer, or
  "stateless" (the embedding of the last `context` tokens, as in Ghodsi et al. 2020, so its
  state is just the last tokens) -> `pred_proj` -> (B, U+1, J).
- cold fusion (optional, models.nn.cold_fusion): a frozen character LM's output gated into
  the predictor's before `pred_proj`; its state rides in the predictor state.
- joiner: tanh(enc + pred) -> Linear -> logits over blank + tokens.
Training joins every (t, u) pair at once, (B, T', U+1, V); decoding joins one frame with one
predictor output per hypothesis (`join`), and `predict` advances the predictor one token.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

from models.nn.cold_fusion import STATE as COLD_STATE
from models.nn.cold_fusion import ColdFusion, ColdFusionConfig

PredState = dict[str, torch.Tensor]


def batch_dim(name: str) -> int:
    """Which axis of a predictor state tensor is the batch: LSTM h, c (and a cold-fused LM's
    lm_h, lm_c) are (layers, B, P); the stateless predictor's tokens are (B, context)."""
    return 1 if name in ("h", "c", *COLD_STATE) else 0


@dataclass(frozen=True)
class TransducerConfig:
    predictor: Literal["lstm", "stateless"] = "lstm"
    pred_dim: int = 256
    joiner_dim: int = 256
    context: int = 2  # stateless predictor: tokens of left context
    cold_fusion: ColdFusionConfig | None = None  # a frozen character LM gated into the predictor

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.cold_fusion is None:
            del out["cold_fusion"]  # bundles without it keep their bundle.json as before
        else:
            out["cold_fusion"]["token_map"] = list(self.cold_fusion.token_map)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TransducerConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown TransducerConfig fields: {sorted(unknown)}")
        d = dict(d)
        if d.get("cold_fusion") is not None:
            d["cold_fusion"] = ColdFusionConfig.from_dict(d["cold_fusion"])
        cfg = cls(**d)
        if cfg.predictor not in ("lstm", "stateless") or min(cfg.pred_dim, cfg.joiner_dim,
                                                              cfg.context) < 1:
            raise ValueError(f"bad TransducerConfig {cfg}")
        return cfg


def _decoding() -> bool:
    """Inference outside an export trace: the predictor may take its table-driven LSTM step."""
    return not (torch.is_grad_enabled() or torch.jit.is_tracing()
                or torch.onnx.is_in_onnx_export())


class TransducerHead(nn.Module):
    output_kind = "encoder"

    def __init__(self, d_model: int, vocab_size: int, cfg: TransducerConfig, blank: int = 0):
        super().__init__()
        self.cfg = cfg
        self.blank = blank
        self.enc_proj = nn.Linear(d_model, cfg.joiner_dim)
        self.embed = nn.Embedding(vocab_size, cfg.pred_dim)
        if cfg.predictor == "lstm":
            self.rnn: nn.LSTM | None = nn.LSTM(cfg.pred_dim, cfg.pred_dim, batch_first=True)
            self.mix: nn.Conv1d | None = None
        else:
            self.rnn = None
            # a depthwise conv over the last `context` embeddings (no recurrence)
            self.mix = nn.Conv1d(cfg.pred_dim, cfg.pred_dim, cfg.context, groups=cfg.pred_dim)
        self.fusion: ColdFusion | None = None
        if cfg.cold_fusion is not None:
            self.fusion = ColdFusion(cfg.cold_fusion, cfg.pred_dim, vocab_size)
        pred_out = self.fusion.out_dim if self.fusion is not None else cfg.pred_dim
        self.pred_proj = nn.Linear(pred_out, cfg.joiner_dim)
        self.out = nn.Linear(cfg.joiner_dim, vocab_size)
        self._gate_key: tuple[tuple[int, int], ...] | None = None  # see _lstm_step
        self._gate_table = torch.empty(0)

    # ---- encoder side ---------------------------------------------------------------------
    def forward(self, enc: torch.Tensor) -> torch.Tensor:
        return self.enc_proj(enc)  # (B, T', J)

    # ---- predictor ------------------------------------------------------------------------
    def init_pred_state(self, batch: int) -> PredState:
        dev = self.embed.weight.device
        if self.rnn is not None:
            h = torch.zeros(1, batch, self.cfg.pred_dim, device=dev)
            state = {"h": h, "c": torch.zeros_like(h)}
        else:
            state = {"tokens": torch.full((batch, self.cfg.context), self.blank,
                                          dtype=torch.long, device=dev)}
        if self.fusion is not None:
            state.update(self.fusion.init_state(batch, dev))
        return state

    def predict(self, tokens: torch.Tensor, state: PredState) -> tuple[torch.Tensor, PredState]:
        """tokens (B,) last emitted (blank = start) -> predictor output (B, J), new state."""
        if self.rnn is not None and _decoding():
            h, c = self._lstm_step(tokens, state["h"][0], state["c"][0])  # (B, P) each
            s, new = h, {"h": h.unsqueeze(0), "c": c.unsqueeze(0)}
        elif self.rnn is not None:
            y, (h, c) = self.rnn(self.embed(tokens).unsqueeze(1), (state["h"], state["c"]))
            s, new = y[:, 0], {"h": h, "c": c}
        else:
            hist = torch.cat([state["tokens"][:, 1:], tokens.unsqueeze(1)], dim=1)  # (B, context)
            assert self.mix is not None
            s = torch.relu(self.mix(self.embed(hist).transpose(1, 2))[:, :, -1])  # (B, P)
            new = {"tokens": hist}
        if self.fusion is not None:
            fused, lm_state = self.fusion(s.unsqueeze(1), tokens.unsqueeze(1), state)
            s, new = fused[:, 0], {**new, **lm_state}  # (B, P + F)
        return self.pred_proj(s), new

    def _lstm_step(self, tokens: torch.Tensor, h: torch.Tensor,
                   c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One LSTM step (decoding): tokens (B,), h, c (B, P) -> new h, c (B, P). The input
        side of the gates depends on the token alone, so it is a (V, 4P) table (kept while the
        weights are unchanged): half the matmul, and no `torch.lstm` call, whose fixed cost per
        call outweighs a beam round's small batch's compute (docs/RESULTS.md, session 26)."""
        rnn = self.rnn
        assert rnn is not None
        params = (self.embed.weight, rnn.weight_ih_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
        key = tuple((p.data_ptr(), p._version) for p in params)
        if self._gate_key != key:
            self._gate_table = torch.addmm(rnn.bias_ih_l0 + rnn.bias_hh_l0, self.embed.weight,
                                           rnn.weight_ih_l0.t())  # (V, 4P)
            self._gate_key = key
        gates = torch.addmm(self._gate_table[tokens], h, rnn.weight_hh_l0.t())  # (B, 4P)
        i, f, g, o = gates.chunk(4, dim=1)  # torch.nn.LSTM's gate order
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def predict_sequence(self, targets: torch.Tensor) -> torch.Tensor:
        """Training: targets (B, U) -> predictor outputs (B, U+1, J) for 0..U tokens seen."""
        b = targets.shape[0]
        start = torch.full((b, 1), self.blank, dtype=torch.long, device=targets.device)
        seq = torch.cat([start, targets.long()], dim=1)  # (B, U+1)
        if self.rnn is not None:
            y, _ = self.rnn(self.embed(seq))
        else:
            assert self.mix is not None
            pad = torch.full((b, self.cfg.context - 1), self.blank, dtype=torch.long,
                             device=targets.device)
            emb = self.embed(torch.cat([pad, seq], dim=1)).transpose(1, 2)  # (B, P, U+ctx)
            y = torch.relu(self.mix(emb)).transpose(1, 2)  # (B, U+1, P)
        if self.fusion is not None:
            y, _ = self.fusion(y, seq, None)  # (B, U+1, P + F)
        return self.pred_proj(y)

    # ---- joiner ---------------------------------------------------------------------------
    def join(self, enc: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """enc (..., J) + pred (..., J) (broadcasting) -> log-probs (..., V)."""
        return torch.log_softmax(self.out(torch.tanh(enc + pred)), dim=-1)
