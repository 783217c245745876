"""Voice-invariant training: an adversary that tells voices apart from encoder embeddings.

What limits accuracy here is voices never heard (docs/RESULTS.md: dev with heard voices is
~10 WER points better than test with new ones, and signal-level voice transforms did not close
it). Speaker-adversarial training (Meng et al. 2018, "Speaker-invariant training via adversarial
learning"; Shinohara 2016 for noise domains) asks the encoder to drop what identifies the
speaker: a classifier learns, per frame, which engine or voice spoke (cross-entropy on
detached embeddings, its own Adam), and the encoder is trained, beside its ASR loss, to leave
that classifier at chance. The encoder's term is the confusion loss of Tzeng et al. 2015
(cross-entropy of the classifier's output to the uniform distribution, minus log K so that
chance is 0) rather than a reversed gradient: it is bounded below, so the encoder cannot win
by pushing the classifier into confident mistakes.

Per training step, on up to `frames` frames sampled from the batch's valid frames:
1. classifier update: CE(classifier(e.detach()), label of the frame's utterance);
2. encoder term, classifier frozen: mean over frames of -mean_k log p_k(e) - log K.
The classifier is training-only, kept out of the Lightning module's registered submodules as
training.robust's critic is (no checkpoint or bundle holds it); under DDP its gradients are
averaged across ranks so every rank's copy stays identical. Labels are indexed by a vocabulary
fixed before training (sorted, from the training manifests), the same on every rank.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from training.config import AdversaryConfig
from training.data.dataset import cut_label
from training.robust import _average_across_ranks, valid_frames


class VoiceClassifier(nn.Module):
    """(N, D) frame embeddings -> (N, K) logits over the label vocabulary."""

    def __init__(self, d_model: int, labels: int, dim: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, dim), nn.ReLU(), nn.Linear(dim, dim),
                                 nn.ReLU(), nn.Linear(dim, labels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def confusion_loss(logits: torch.Tensor) -> torch.Tensor:
    """(N, K) -> cross-entropy of softmax(logits) to the uniform distribution, minus log K:
    0 when every frame's output is uniform (chance), positive otherwise."""
    k = logits.shape[-1]
    return -torch.log_softmax(logits, dim=-1).mean(dim=-1).mean() - math.log(k)


class VoiceAdversary:
    def __init__(self, cfg: AdversaryConfig, d_model: int, labels: Sequence[str], seed: int = 0):
        if len(labels) < 2:
            raise ValueError(f"adversary.target={cfg.target}: the training set has "
                             f"{len(labels)} distinct label(s); an adversary needs two or more")
        self.cfg = cfg
        self.index = {name: i for i, name in enumerate(labels)}
        self.classifier = VoiceClassifier(d_model, len(labels), cfg.dim)
        self.opt = torch.optim.Adam(self.classifier.parameters(), lr=cfg.lr)
        self.gen = torch.Generator().manual_seed(seed)

    def to(self, device: torch.device) -> VoiceAdversary:
        self.classifier.to(device)
        return self

    def label_ids(self, names: Sequence[str]) -> torch.Tensor:
        """Utterance labels -> (B,) indices; a label the vocabulary lacks is an error naming it."""
        missing = sorted({n for n in names if n not in self.index})
        if missing:
            raise ValueError(f"adversary: labels {missing[:5]} are not in the training set's "
                             f"vocabulary of {len(self.index)}")
        return torch.tensor([self.index[n] for n in names], dtype=torch.long)

    def __call__(self, enc: torch.Tensor, lengths: torch.Tensor, names: Sequence[str]
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        """enc (B, T', D) with gradient, lengths (B,), one label per utterance -> (the encoder's
        confusion term, unweighted; values to log). Updates the classifier once."""
        mask = valid_frames(lengths, enc.shape[1])  # (B, T')
        frame_labels = self.label_ids(names).to(enc.device)[:, None].expand_as(mask)[mask]
        frames = enc[mask].float()  # (N, D)
        idx = torch.randperm(frames.shape[0], generator=self.gen)[: self.cfg.frames]
        idx = idx.to(enc.device)
        x, y = frames[idx], frame_labels[idx]
        with torch.autocast(x.device.type, enabled=False), torch.enable_grad():
            logits = self.classifier(x.detach())
            ce = nn.functional.cross_entropy(logits, y)
            self.opt.zero_grad(set_to_none=True)
            ce.backward()
            _average_across_ranks(self.classifier)
            self.opt.step()
            acc = float((logits.argmax(-1) == y).float().mean())
            for p in self.classifier.parameters():
                p.requires_grad_(False)
            confusion = confusion_loss(self.classifier(x))
            for p in self.classifier.parameters():
                p.requires_grad_(True)
        return confusion, {"adv_ce": float(ce.detach()), "adv_acc": acc,
                           "adv_confusion": float(confusion.detach())}


def utterance_labels(batch: dict[str, Any], target: str) -> list[str]:
    """The batch's per-utterance labels for `target` ("engine" | "voice")."""
    key = {"engine": "engines", "voice": "speakers"}[target]
    if key not in batch:
        raise ValueError(f"adversary.target={target}: batches carry no {key} (packed .npz "
                         "data holds features only: use Lhotse manifests)")
    return list(batch[key])


def label_vocabulary(cuts: Iterable[Any], target: str) -> list[str]:
    """Sorted distinct labels of a CutSet's utterances for `target` (the vocabulary every rank
    builds alike from the same manifests)."""
    return sorted({cut_label(cut, target) for cut in cuts})
