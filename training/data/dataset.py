"""Lhotse CutSet -> padded batches with on-the-fly features and augmentation.

Lhotse's DynamicBucketingSampler yields CutSets of similar duration (max_duration seconds of
audio per batch); this map-style dataset turns one into tensors. Features are our fbank, so
training and serving share the front end exactly.

With `robust.corrupt` (training only) the waveform is corrupted by training.data.views instead of
augment's noise / reverb / telephone; with paired views (robust.l1_weight / gan_weight) the batch
also carries "clean_features": the same utterance at the same speed, uncorrupted and unmasked,
frame for frame the same length as "features".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from models.features import Fbank, FbankConfig
from models.tokenizer import CharTokenizer
from training.config import AugmentConfig, RobustConfig
from training.data.augment import augment_waveform, spec_augment, speed


class AsrDataset(torch.utils.data.Dataset):
    def __init__(self, *, tokenizer: CharTokenizer, features: FbankConfig,
                 augment: AugmentConfig | None, feat_mean: torch.Tensor, seed: int = 0,
                 robust: RobustConfig | None = None, energies: bool = False):
        from training.data.views import CorruptionDraw

        self.tok = tokenizer
        self.fbank = Fbank(features)
        self.fbanks: dict[int, Fbank] = {100: self.fbank}  # VTLP warps, by round(100 * alpha)
        self.augment = augment
        self.fill = feat_mean
        self.rng = np.random.default_rng(seed)
        self.views = (CorruptionDraw(robust, seed)
                      if augment is not None and robust is not None and robust.corrupt else None)
        self.paired = self.views is not None and self.views.cfg.paired
        # trainable PCEN (training.frontend): mel energies out; SpecAugment runs after PCEN
        self.energies = energies

    def features(self, audio: np.ndarray, warp: int = 100) -> torch.Tensor:
        """(S,) -> (T, F): the front end's features, or mel energies for trainable PCEN; `warp`
        is a VTLP factor in hundredths (100 = the serving filterbank)."""
        if warp not in self.fbanks:
            self.fbanks[warp] = Fbank(self.fbank.cfg, warp=warp / 100)
        fbank = self.fbanks[warp]
        x = torch.from_numpy(audio)
        return fbank.energies(x) if self.energies else fbank(x)

    def draw_warp(self) -> int:
        """A VTLP factor in hundredths drawn from augment.vtlp (100 when off)."""
        lo, hi = self.augment.vtlp if self.augment is not None else (1.0, 1.0)
        if lo == hi == 1.0:
            return 100
        return int(self.rng.integers(round(lo * 100), round(hi * 100) + 1))

    def __getitem__(self, cuts: Any) -> dict[str, Any]:
        items, clean = [], []
        for cut in cuts:
            audio = cut.load_audio()[0].astype(np.float32)  # (S,)
            if self.augment is not None and self.views is not None:
                audio = speed(audio, float(self.rng.choice(self.augment.speed)))
                noisy, _kind = self.views(audio, self.rng)
            elif self.augment is not None:
                noisy = augment_waveform(audio, self.augment, self.rng)
            else:
                noisy = audio
            warp = self.draw_warp()
            f = self.features(noisy, warp)
            if self.augment is not None and not self.energies:
                f = spec_augment(f, self.augment, self.rng, self.fill)
            items.append((f, cut.supervisions[0].text, cut.id))
            if self.paired:
                clean.append(self.features(audio, warp))  # (T, F), T as f's
        batch = collate(items, self.tok, self.fill)
        batch["engines"] = [cut_label(c, "engine") for c in cuts]  # training.adversary's labels
        batch["speakers"] = [cut_label(c, "voice") for c in cuts]
        if self.paired:
            batch["clean_features"] = pad(clean, self.fill)
        return batch


def cut_label(cut: Any, target: str) -> str:
    """A cut's engine (cut.custom["engine"], "" when absent) or, for "voice", its first
    supervision's speaker ("" when absent): what training.adversary classifies."""
    if target == "engine":
        return str((getattr(cut, "custom", None) or {}).get("engine", ""))
    return str(getattr(cut.supervisions[0], "speaker", None) or "")


def collate(items: list[tuple[torch.Tensor, str, str]], tok: CharTokenizer,
            fill: torch.Tensor) -> dict[str, Any]:
    """[(features (T_i, F), text, id)] -> the padded batch every training module takes."""
    feats = [f for f, _, _ in items]
    targets = [torch.tensor(tok.encode(text), dtype=torch.long) for _, text, _ in items]
    return {
        "features": pad(feats, fill), "lengths": torch.tensor([f.shape[0] for f in feats]),
        "targets": torch.cat(targets), "target_lengths": torch.tensor([len(t) for t in targets]),
        "texts": [t for _, t, _ in items], "ids": [i for _, _, i in items],
    }


def pad(feats: list[torch.Tensor], fill: torch.Tensor) -> torch.Tensor:
    """[(T_i, F)] -> (B, max T, F), padded with `fill` (normalised zero)."""
    x = fill.expand(len(feats), max(f.shape[0] for f in feats), -1).clone()
    for i, f in enumerate(feats):
        x[i, : f.shape[0]] = f
    return x


def worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)
    info = torch.utils.data.get_worker_info()
    if info is not None:
        info.dataset.rng = np.random.default_rng(info.seed % 2**32)  # type: ignore[attr-defined]


def feature_stats(cuts: Any, features: FbankConfig, max_cuts: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """Global mean/std of fbank over (a sample of) the training cuts: the model's normaliser."""
    fbank = Fbank(features)
    total = torch.zeros(features.num_mel_bins, dtype=torch.float64)
    sq = torch.zeros_like(total)
    n = 0
    for i, cut in enumerate(cuts):
        if i >= max_cuts:
            break
        f = fbank(torch.from_numpy(cut.load_audio()[0].astype(np.float32))).double()
        total += f.sum(0)
        sq += (f**2).sum(0)
        n += f.shape[0]
    mean = total / max(n, 1)
    std = (sq / max(n, 1) - mean**2).clamp(min=1e-6).sqrt()
    return mean.float(), std.float()
