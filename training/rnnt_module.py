"""Lightning module for RNN-T training: same encoder, optimiser and schedule as CTC
(CtcModule), the transducer loss (training.losses.rnnt) over the joiner's (B, T', U+1, V)."""

from __future__ import annotations

from typing import Any

import torch

from models.decoding.rnnt import RnntGreedyDecoder
from models.nn.transducer import TransducerHead
from training.ctc_module import CtcModule
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
    @property
    def transducer(self) -> TransducerHead:
        head = self.model.head
        assert isinstance(head, TransducerHead)
        return head

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        enc, out_lengths = self.model(batch["features"], batch["lengths"])  # (B, T', J)
        targets = pad_targets(batch["targets"], batch["target_lengths"])  # (B, U)
        pred = self.transducer.predict_sequence(targets)  # (B, U+1, J)
        log_probs = self.transducer.join(enc.unsqueeze(2), pred.unsqueeze(1))  # (B, T', U+1, V)
        nll = rnnt_loss(log_probs, targets, out_lengths.clamp(min=1), batch["target_lengths"],
                        blank=self.tok.blank_id, reduction="none")
        loss = nll.sum() / batch["target_lengths"].sum().clamp(min=1)
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
