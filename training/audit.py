"""What each training process did, for checking data parallelism: the cut ids of every batch it
trained on and a digest of its parameters at the end (`audit=true` in the config).

Under DDP every rank must end with the same parameters (gradients are all-reduced) and train on
different cuts (each rank's sampler takes its own share): the two-process and two-node tests
read these files to check both. With GAN-robust training the critic (outside DDP, its gradients
averaged by training.robust) must also end identical on every rank. Written to
out_dir/ranks/rank<global rank>.json.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import lightning as L
import torch


def parameter_digest(module: torch.nn.Module) -> str:
    """SHA-256 of every parameter's float32 bytes, in name order."""
    h = hashlib.sha256()
    for name, p in sorted(module.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()


class RankAudit(L.Callback):
    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir) / "ranks"
        self.epochs: list[list[str]] = []  # cut ids trained on, per epoch

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        while len(self.epochs) <= trainer.current_epoch:
            self.epochs.append([])
        self.epochs[trainer.current_epoch].extend(batch["ids"])

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        record = {"global_rank": trainer.global_rank, "world_size": trainer.world_size,
                  "node_rank": trainer.node_rank, "steps": trainer.global_step,
                  "param_sha256": parameter_digest(pl_module.model), "epochs": self.epochs}
        robust = getattr(pl_module, "robust", None)  # GAN-robust training's critic (not DDP's)
        if robust is not None and robust.critic is not None:
            record["critic_sha256"] = parameter_digest(robust.critic)
        (self.dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record) + "\n")
