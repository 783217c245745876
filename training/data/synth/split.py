"""Train / dev / test assignment of voices and sentences.

Test uses voices AND sentences never seen in train. Voices are held out by speaker group (the
same person synthesized by several engines is held out everywhere), engine by engine, so every
engine with two or more speakers has unseen test speakers. Sentences are assigned by a stable
hash of their text, so a sentence's split never depends on the seed or the corpus size.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from collections.abc import Sequence

from training.data.synth.voices import Voice

SPLITS = ("train", "dev", "test")
TEXT_SPLIT_PERMILLE = {"train": 900, "dev": 50, "test": 50}


def text_split(text: str) -> str:
    bucket = int(hashlib.sha1(text.encode()).hexdigest()[:8], 16) % 1000
    edge = 0
    for split in SPLITS:
        edge += TEXT_SPLIT_PERMILLE[split]
        if bucket < edge:
            return split
    raise AssertionError("TEXT_SPLIT_PERMILLE must sum to 1000")


def split_voices(
    voices: Sequence[Voice], *, seed: int, test_frac: float = 0.1, dev_frac: float = 0.05,
    dev_min_groups: int = 10,
) -> dict[str, list[Voice]]:
    """Voice pools per split. dev pool = dev-held-out voices + train voices."""
    rng = random.Random(f"voices-{seed}")
    groups_of: dict[str, set[str]] = defaultdict(set)  # engine -> speaker groups
    for v in voices:
        groups_of[v.engine].add(v.group)
    held: dict[str, str] = {}  # group -> "test" | "dev"
    for engine in sorted(groups_of, key=lambda e: (len(groups_of[e]), e)):
        groups = sorted(groups_of[engine])
        rng.shuffle(groups)
        n = len(groups)
        want = {"test": max(1, round(test_frac * n)) if n >= 2 else 0,
                "dev": max(1, round(dev_frac * n)) if n >= dev_min_groups else 0}
        for split in ("test", "dev"):
            have = sum(1 for g in groups if held.get(g) == split)
            for g in groups:
                free = sum(1 for x in groups if x not in held)
                if have >= want[split] or free <= 1:  # always keep a train speaker
                    break
                if g not in held:
                    held[g] = split
                    have += 1
    pools: dict[str, list[Voice]] = {s: [] for s in SPLITS}
    for v in sorted(voices):
        split = held.get(v.group, "train")
        pools[split].append(v)
    pools["dev"] = sorted(pools["dev"] + pools["train"])
    for split in SPLITS:
        if not pools[split]:
            raise ValueError(f"no voices left for the {split} split")
    return pools
