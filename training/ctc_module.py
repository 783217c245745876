"""Lightning module for CTC and Gram-CTC training of the streaming acoustic model.

The CTC loss is torch's own `ctc_loss` (native on CPU and CUDA); Gram-CTC's is ours
(training.losses.gram_ctc), over the grams the tokenizer lists. Validation decodes greedily and
logs dev WER/CER (jiwer, pooled over DDP ranks); the best checkpoint by dev WER is exported as a
bundle by train.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch

from models.acoustic import AcousticModel, ModelConfig
from models.decoding.ctc_greedy import greedy_batch
from models.tokenizer import CharTokenizer
from training.config import AugmentConfig, OptimConfig, RobustConfig
from training.data.augment import spec_augment
from training.eval.metrics import edit_counts
from training.frontend import TrainablePcen
from training.losses.gram_ctc import gram_ctc_loss, gram_lattice
from training.robust import RobustObjective

if TYPE_CHECKING:
    from training.adversary import VoiceAdversary


class CtcModule(L.LightningModule):
    def __init__(self, model_cfg: ModelConfig, optim: OptimConfig, tokenizer: CharTokenizer,
                 robust: RobustConfig | None = None, frontend: TrainablePcen | None = None,
                 spec_augment: AugmentConfig | None = None,
                 adversary: VoiceAdversary | None = None):
        super().__init__()
        self.model = AcousticModel(model_cfg)
        # training-only weights saved beside the bundle for continuations (training.extras)
        self.bundle_extras: tuple[str, ...] = ()
        # trainable PCEN: batches carry mel energies; SpecAugment runs here, after PCEN
        self.frontend = frontend
        self.spec = spec_augment
        self._spec_rng = np.random.default_rng(0)
        # training.robust: not a registered submodule (no DDP, checkpoint or bundle holds it)
        self.robust: RobustObjective | None  # (declared here: the assignment bypasses nn.Module)
        self.__dict__["robust"] = (RobustObjective(robust, model_cfg.encoder.d_model)
                                   if robust is not None and robust.paired else None)
        # training.adversary's voice classifier: training-only like the critic
        self.adversary: VoiceAdversary | None
        self.__dict__["adversary"] = adversary
        self.optim = optim
        self.tok = tokenizer
        self._refs: list[str] = []
        self._hyps: list[str] = []
        # Gram-CTC: every token but the blank is a gram (characters are the 1-grams)
        self._gram_ids = {s: i for i, s in enumerate(tokenizer.symbols) if i != tokenizer.blank_id}
        self._gram_max_n = max(len(s) for s in self._gram_ids)

    def encode(self, features: torch.Tensor, lengths: torch.Tensor, *, augment: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F) features (mel energies with trainable PCEN) -> (B, T', D) embeddings."""
        if self.frontend is not None:
            features = self.frontend(features)  # (B, T, M) PCEN features
            if augment and self.spec is not None:
                fill = self.model.encoder.feat_mean
                features = torch.stack([spec_augment(f, self.spec, self._spec_rng, fill)
                                        for f in features])
        return self.model.encoder(features, lengths)

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        enc, out_lengths = self.encode(batch["features"], batch["lengths"])
        return self.head_loss(enc, out_lengths, batch)

    def head_loss(self, enc: torch.Tensor, out_lengths: torch.Tensor, batch: dict[str, Any]
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, head outputs, their lengths) for encoder outputs enc (B, T', D)."""
        log_probs = self.model.head(enc)  # (B, T', V)
        if self.model.cfg.head == "gram_ctc":
            ids, same = gram_lattice(batch["texts"], self._gram_ids, self._gram_max_n)
            nll = gram_ctc_loss(log_probs, ids.to(log_probs.device), same.to(log_probs.device),
                                out_lengths, batch["target_lengths"], blank=self.tok.blank_id,
                                reduction="none")
            nll = nll.masked_fill(nll > 1e29, 0.0)  # too few frames for the text (zero_infinity)
            loss = nll.sum() / batch["target_lengths"].sum().clamp(min=1)
            return loss, log_probs, out_lengths
        loss = torch.nn.functional.ctc_loss(
            log_probs.transpose(0, 1), batch["targets"], out_lengths, batch["target_lengths"],
            blank=self.tok.blank_id, reduction="sum", zero_infinity=True,
        ) / batch["target_lengths"].sum().clamp(min=1)
        return loss, log_probs, out_lengths

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        n = len(batch["texts"])
        frozen = self.global_step < self.optim.freeze_encoder_steps  # the head learns alone
        self.model.encoder.train(not frozen)
        with torch.set_grad_enabled(not frozen):
            enc, out_lengths = self.encode(batch["features"], batch["lengths"], augment=True)
        self.model.encoder.train()
        loss, _, _ = self.head_loss(enc, out_lengths, batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=n)
        if self.adversary is not None:
            from training.adversary import utterance_labels

            names = utterance_labels(batch, self.adversary.cfg.target)
            confusion, logs = self.adversary(enc, out_lengths, names)
            for key, value in logs.items():
                self.log(key, value, batch_size=n)
            loss = loss + self.adversary.cfg.weight * confusion
        if self.robust is None or "clean_features" not in batch:
            return loss
        encoder = self.model.encoder
        with torch.no_grad():  # the clean view's embeddings: the target, without dropout
            encoder.eval()
            enc_clean, _ = self.encode(batch["clean_features"], batch["lengths"])
            encoder.train()
        extra, logs = self.robust(enc, enc_clean, out_lengths)
        for key, value in logs.items():
            self.log(key, value, batch_size=n)
        return loss + extra

    def on_fit_start(self) -> None:
        if self.robust is not None:
            self.robust.to(self.device)
        if self.adversary is not None:
            self.adversary.to(self.device)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, log_probs, out_lengths = self.loss(batch)
        self.log("dev_loss", loss, prog_bar=True, batch_size=len(batch["texts"]), sync_dist=True)
        self._hyps += greedy_batch(log_probs, out_lengths, self.tok)
        self._refs += batch["texts"]

    def on_validation_epoch_end(self) -> None:
        # Pooled over every rank's share of the dev set: edit and reference counts are summed
        # across processes, so a DDP run's dev WER is the WER of the whole dev set (a mean of
        # per-rank WERs would weigh a short share like a long one).
        counts = torch.zeros(4, dtype=torch.float64)  # word edits, ref words, char edits, ref chars
        if self._refs:
            counts += torch.tensor(edit_counts(self._refs, self._hyps), dtype=torch.float64)
        counts = self.trainer.strategy.reduce(counts.to(self.device), reduce_op="sum").cpu()
        if counts[1] > 0:
            self.log("dev_wer", float(counts[0] / counts[1]), prog_bar=True)
            self.log("dev_cer", float(counts[2] / counts[3].clamp(min=1)))
        self._refs, self._hyps = [], []

    def configure_optimizers(self) -> Any:
        o = self.optim
        # fused AdamW on CUDA: one kernel for all parameters instead of one per tensor
        opt = torch.optim.AdamW(self.parameters(), lr=o.lr, weight_decay=o.weight_decay,
                                fused=self.device.type == "cuda")
        if o.max_minutes > 0:
            sched: Any = torch.optim.lr_scheduler.LambdaLR(
                opt, TimeBudgetSchedule(o.warmup_steps, o.max_minutes * 60.0))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        # OneCycle needs >= 1 step in each phase (3 steps with 1 warm-up step divided by zero)
        total = max(o.max_steps, 4)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=o.lr, total_steps=total,
            pct_start=min(0.5, max(o.warmup_steps, 2) / total), anneal_strategy="cos")
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class TimeBudgetSchedule:
    """LR factor: linear warm-up over steps, then cosine decay over the wall-clock budget."""

    def __init__(self, warmup_steps: int, budget_s: float, floor: float = 0.02):
        self.warmup = max(warmup_steps, 1)
        self.budget = budget_s
        self.floor = floor
        self.start: float | None = None

    def __call__(self, step: int) -> float:
        import math
        import time

        now = time.monotonic()
        if self.start is None:
            self.start = now
        if step < self.warmup:
            return (step + 1) / self.warmup
        frac = min(1.0, (now - self.start) / self.budget)
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * frac))
