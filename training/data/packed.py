"""Packed features: a corpus as int8 log-mel frames in one .npz, for training where neither
Lhotse nor the audio libraries are installed (a lent GPU machine) and where the bytes that can
travel are few (64 MiB a call).

`pack(manifest, out)` computes our fbank for each cut (the serving front end exactly),
normalises it by the pack's per-bin mean and std, and stores round(16 x z) clipped to int8
(0.0625 sigma steps, +-7.9 sigma range: far below the variation SpecAugment adds), with the
transcripts, ids and durations; `np.savez_compressed` shrinks it further. Training on a pack
uses `PackedDataset` + `DurationBatchSampler` (duration-bucketed batches, sharded by DDP rank,
no Lhotse) and keeps SpecAugment; waveform augmentation (noise, reverberation, speed) cannot
run on features, so a pack is augmented at feature level only: say so where it matters.
`chorus train data.train=[x.npz]` selects it (any path ending in .npz).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.features import Fbank, FbankConfig
from models.tokenizer import CharTokenizer
from training.config import AugmentConfig

PACK_VERSION = 1
STEPS_PER_SIGMA = 16.0


def is_packed(path: str | Path) -> bool:
    return str(path).endswith(".npz")


def pack(cuts: Any, out: str | Path, features: FbankConfig, *, max_bytes: int | None = None,
         seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Write the cuts (a Lhotse CutSet or iterable of cuts) as a pack; with `max_bytes`, a
    seeded random subset whose int8 frames fit that budget (before compression)."""
    from tqdm import tqdm

    fbank = Fbank(features)
    cut_list = list(cuts)
    if max_bytes is not None:
        random.Random(seed).shuffle(cut_list)
    frames: list[np.ndarray] = []
    texts, ids, durations = [], [], []
    used = 0
    for cut in tqdm(cut_list, desc="pack", unit="cut", disable=not progress):
        f = fbank(torch.from_numpy(cut.load_audio()[0].astype(np.float32))).numpy()  # (T, F)
        if max_bytes is not None and used + f.size > max_bytes:
            continue
        used += f.size
        frames.append(f)
        texts.append(cut.supervisions[0].text)
        ids.append(cut.id)
        durations.append(float(cut.duration))
    if not frames:
        raise ValueError("nothing to pack: no cuts (or none fits max_bytes)")
    allf = np.concatenate(frames)
    mean, std = allf.mean(0), np.maximum(allf.std(0), 1e-3)
    q = np.clip(np.round((allf - mean) / std * STEPS_PER_SIGMA), -127, 127).astype(np.int8)
    starts = np.cumsum([0] + [len(f) for f in frames]).astype(np.int64)
    meta = {"version": PACK_VERSION, "features": features.to_dict(), "utterances": len(ids),
            "hours": round(sum(durations) / 3600, 4)}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, frames=q, starts=starts, mean=mean.astype(np.float32),
                        std=std.astype(np.float32), texts=np.array(texts), ids=np.array(ids),
                        durations=np.array(durations, dtype=np.float32),
                        meta=np.array(json.dumps(meta)))
    return {**meta, "bytes": Path(out).stat().st_size}


class PackedCorpus:
    """A pack loaded into memory: utterance i's features dequantised on demand."""

    def __init__(self, path: str | Path):
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"pack not found: {p}")
        with np.load(p, allow_pickle=False) as z:
            self.meta = json.loads(str(z["meta"]))
            if self.meta.get("version") != PACK_VERSION:
                raise ValueError(f"{p}: pack version {self.meta.get('version')}, expected {PACK_VERSION}")
            self.frames, self.starts = z["frames"], z["starts"]
            self.mean, self.std = torch.from_numpy(z["mean"]), torch.from_numpy(z["std"])
            self.texts = [str(t) for t in z["texts"]]
            self.ids = [str(t) for t in z["ids"]]
            self.durations = z["durations"].astype(float)
        self.features = FbankConfig.from_dict(self.meta["features"])

    def __len__(self) -> int:
        return len(self.ids)

    def features_of(self, i: int) -> torch.Tensor:
        """(T, F) float features (log-mel, as Fbank makes them, up to the quantisation)."""
        q = torch.from_numpy(self.frames[self.starts[i]: self.starts[i + 1]].astype(np.float32))
        return q / STEPS_PER_SIGMA * self.std + self.mean


class PackedDataset(torch.utils.data.Dataset):
    """A list of utterance indices -> the same padded batch dict as AsrDataset."""

    def __init__(self, corpus: PackedCorpus, *, tokenizer: CharTokenizer,
                 augment: AugmentConfig | None, feat_mean: torch.Tensor, seed: int = 0):
        self.corpus = corpus
        self.tok = tokenizer
        self.augment = augment
        self.fill = feat_mean
        self.rng = np.random.default_rng(seed)

    def __getitem__(self, indices: list[int]) -> dict[str, Any]:
        from training.data.augment import spec_augment
        from training.data.dataset import collate

        items = []
        for i in indices:
            f = self.corpus.features_of(i)
            if self.augment is not None:
                f = spec_augment(f, self.augment, self.rng, self.fill)
            items.append((f, self.corpus.texts[i], self.corpus.ids[i]))
        return collate(items, self.tok, self.fill)


class DurationBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of utterances of similar duration, <= max_duration_s of audio each, shuffled per
    epoch; under DDP each rank takes every world-th batch of the same order, and every rank gets
    the same number of batches (a few of the last ones are dropped), so no rank waits."""

    def __init__(self, durations: np.ndarray, *, max_duration_s: float, shuffle: bool, seed: int,
                 num_buckets: int = 10):
        self.durations = durations
        self.max_s = max_duration_s
        self.shuffle = shuffle
        self.seed = seed
        self.num_buckets = max(1, num_buckets)
        self.epoch = 0

    def _rank(self) -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 1000003 + self.epoch)
        order = sorted(range(len(self.durations)), key=lambda i: self.durations[i])
        size = math.ceil(len(order) / self.num_buckets)
        batches: list[list[int]] = []
        for b in range(0, len(order), size):
            bucket = order[b: b + size]
            if self.shuffle:
                rng.shuffle(bucket)
            cur: list[int] = []
            total = 0.0
            for i in bucket:
                if cur and total + self.durations[i] > self.max_s:
                    batches.append(cur)
                    cur, total = [], 0.0
                cur.append(i)
                total += self.durations[i]
            if cur:
                batches.append(cur)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        rank, world = self._rank()
        batches = self._batches()
        usable = len(batches) - len(batches) % world if world > 1 else len(batches)
        self.epoch += 1
        return iter(batches[rank:usable:world])

    def __len__(self) -> int:
        rank, world = self._rank()
        n = len(self._batches())
        return n // world if world > 1 else n
