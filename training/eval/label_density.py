"""`python -m training.eval.label_density MANIFEST [SUBSAMPLING]`: how crowded CTC labels are.

For each utterance: (characters + adjacent repeats, which need a blank between them) / model
output frames (10 ms frames / subsampling). CTC needs this <= 1; it learns best well below.
"""

from __future__ import annotations

import gzip
import json
import sys

import numpy as np


def main(manifest: str, subsampling: int = 4) -> str:
    ratios = []
    with gzip.open(manifest, "rt") as f:
        for line in f:
            cut = json.loads(line)
            text = cut["supervisions"][0]["text"]
            repeats = sum(1 for a, b in zip(text, text[1:], strict=False) if a == b)
            ratios.append((len(text) + repeats) / (cut["duration"] * 100 / subsampling))
    r = np.asarray(ratios)
    return (f"utterances {r.size}, labels per output frame at x{subsampling}: median "
            f"{np.median(r):.2f}, p99 {np.percentile(r, 99):.2f}, > 1 (infeasible) "
            f"{100 * np.mean(r > 1):.2f} %")


if __name__ == "__main__":
    print(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 4))
