"""`python -m training.eval.label_density MANIFEST [SUBSAMPLING]`: how crowded CTC labels are.

For each utterance: (tokens + adjacent repeats, which need a blank between them) / model
output frames (10 ms frames / subsampling). CTC needs this <= 1; it learns best well below.
Tokens are characters, or (Gram-CTC) the fewest grams found by greedy longest match.
"""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Callable, Iterable, Sequence

import numpy as np


def longest_match(grams: Iterable[str]) -> Callable[[str], list[str]]:
    """text -> greedy longest-match gram segmentation (characters always match)."""
    gram_set = set(grams)
    longest = max((len(g) for g in gram_set), default=1)

    def segment(text: str) -> list[str]:
        out, i = [], 0
        while i < len(text):
            n = next(n for n in range(min(longest, len(text) - i), 0, -1)
                     if n == 1 or text[i : i + n] in gram_set)
            out.append(text[i : i + n])
            i += n
        return out

    return segment


def label_count(toks: Sequence[object]) -> int:
    """The fewest CTC output frames a token sequence needs: a frame per token, and a blank
    between adjacent repeats."""
    return len(toks) + sum(1 for a, b in zip(toks, toks[1:], strict=False) if a == b)


def densities(manifest: str, subsampling: int = 4,
              segment: Callable[[str], Sequence[object]] = list) -> np.ndarray:
    ratios = []
    with gzip.open(manifest, "rt") as f:
        for line in f:
            cut = json.loads(line)
            toks = segment(cut["supervisions"][0]["text"])
            ratios.append(label_count(toks) / (cut["duration"] * 100 / subsampling))
    return np.asarray(ratios)


def main(manifest: str, subsampling: int = 4) -> str:
    r = densities(manifest, subsampling)
    return (f"utterances {r.size}, labels per output frame at x{subsampling}: median "
            f"{np.median(r):.2f}, p99 {np.percentile(r, 99):.2f}, > 1 (infeasible) "
            f"{100 * np.mean(r > 1):.2f} %")


if __name__ == "__main__":
    print(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 4))
