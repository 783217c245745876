"""Lightning module for RNN-T training: same encoder, optimiser and schedule as CTC
(CtcModule). loss="full": the transducer loss (training.losses.rnnt) over the joiner's
(B, T', U+1, V). loss="pruned": the pruned loss (training.losses.pruned_rnnt) with a simple
linear joiner whose two projections live here, not in the bundle's model (decoding never uses
them): they are saved beside it (training.extras) so a continuation starts them trained.
The dev loss is always the full loss, so runs with either loss compare."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from models.acoustic import ModelConfig
from models.decoding.rnnt import RnntGreedyDecoder
from models.nn.transducer import TransducerHead
from models.tokenizer import CharTokenizer
from training.config import OptimConfig
from training.ctc_module import CtcModule
from training.losses.pruned_rnnt import pruned_rnnt_loss
from training.losses.rnnt import rnnt_loss


def pad_targets(flat: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Concatenated targets (sum U,) -> (B, max U), padded with 0 (never read past U)."""
    out = torch.zeros(len(lengths), int(lengths.max()) if len(lengths) else 0, dtype=torch.long)
    pos = 0
    for b, n in enumerate(lengths.tolist()):
        out[b, :n] = flat[pos : pos + n]
        pos += n
    return out.to(flat.device)


class RnntModule(CtcModule):
    def __init__(self, model_cfg: ModelConfig, optim: OptimConfig, tokenizer: CharTokenizer,
                 loss: str = "full", prune_range: int = 5, simple_loss_scale: float = 0.5,
                 **kwargs: Any):
        super().__init__(model_cfg, optim, tokenizer, **kwargs)  # robust, frontend, spec
        if loss not in ("full", "pruned"):
            raise ValueError(f"head.rnnt_loss must be full or pruned, got {loss!r}")
        if loss == "pruned" and prune_range < 2:
            raise ValueError(f"head.prune_range must be >= 2, got {prune_range}")
        self.loss_kind, self.prune_range, self.simple_scale = loss, prune_range, simple_loss_scale
        if loss == "pruned":
            j, v = self.transducer.cfg.joiner_dim, tokenizer.vocab_size
            self.simple_am = nn.Linear(j, v)  # (B, T', J) -> (B, T', V)
            self.simple_lm = nn.Linear(j, v)  # (B, U+1, J) -> (B, U+1, V)
            self.bundle_extras = ("simple_am.", "simple_lm.")

    @property
    def transducer(self) -> TransducerHead:
        head = self.model.head
        assert isinstance(head, TransducerHead)
        return head

    def head_loss(self, enc: torch.Tensor, out_lengths: torch.Tensor, batch: dict[str, Any]
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        enc = self.model.head(enc)  # (B, T', D) -> the joiner space (B, T', J)
        targets = pad_targets(batch["targets"], batch["target_lengths"])  # (B, U)
        pred = self.transducer.predict_sequence(targets)  # (B, U+1, J)
        frames, lengths = out_lengths.clamp(min=1), batch["target_lengths"]
        if self.loss_kind == "pruned" and torch.is_grad_enabled():
            simple, pruned = pruned_rnnt_loss(
                self.transducer.join, enc, pred, self.simple_am(enc), self.simple_lm(pred),
                targets, frames, lengths, s_range=self.prune_range, blank=self.tok.blank_id)
            # too few frames for the text within the bands: drop (like CTC's zero_infinity)
            ok = (pruned < 1e29) & (simple < 1e29)
            nll = torch.where(ok, self.simple_scale * simple + pruned, torch.zeros_like(pruned))
        else:
            log_probs = self.transducer.join(enc.unsqueeze(2), pred.unsqueeze(1))  # (B, T', U+1, V)
            nll = rnnt_loss(log_probs, targets, frames, lengths, blank=self.tok.blank_id,
                            reduction="none")
        loss = nll.sum() / lengths.sum().clamp(min=1)
        return loss, enc, out_lengths

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, enc, out_lengths = self.loss(batch)
        self.log("dev_loss", loss, prog_bar=True, batch_size=len(batch["texts"]), sync_dist=True)
        frame_s = 0.01 * self.model.subsampling
        for b in range(enc.shape[0]):
            dec = RnntGreedyDecoder(self.transducer, self.tok, frame_seconds=frame_s)
            dec.update(enc[b, : int(out_lengths[b])])
            self._hyps.append(dec.finalize().text)
        self._refs += batch["texts"]
