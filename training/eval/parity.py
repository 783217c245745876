"""`python -m training.eval.parity MANIFEST [N]`: torch vs onnxruntime, chunk by chunk.

Streams the first N utterances of a manifest through both backends with the shipped bundle
(the same Chunker padding as the server) and reports the largest log-probability difference
and how many transcripts are identical.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


def stream_through(backend: Any, bundle: Any, audio: np.ndarray) -> tuple[list[np.ndarray], str]:
    """Chunk by chunk through a backend (the Chunker pads the end like the server does):
    every step's log-probs and the greedy transcript."""
    from models.decoding import bundle_decoder
    from models.streaming import Chunker

    chunker, state = Chunker(bundle), backend.init_state(1)
    dec = bundle_decoder(bundle, "greedy")
    outs = []
    for frames in chunker.accept(audio) + chunker.finish():
        res = backend.step({"features": frames[None].numpy(), **state})
        state = {k.removeprefix("new_"): v for k, v in res.items() if k.startswith("new_state_")}
        outs.append(res["outputs"][0])
        dec.update(torch.from_numpy(res["outputs"][0]))
    return outs, dec.finalize().text


def main(manifest: str, n: int = 100) -> str:
    from lhotse import CutSet

    from models.backends import make_backend
    from models.bundle import DEFAULT_BUNDLE, load

    torch.set_num_threads(1)
    copy = Path(tempfile.mkdtemp()) / "bundle"  # encoder.onnx is written beside the copy
    shutil.copytree(DEFAULT_BUNDLE, copy)
    bundle = load(copy)
    backends = [make_backend("torch", bundle), make_backend("onnxruntime", bundle)]

    worst, same, count = 0.0, 0, 0
    for cut in CutSet.from_file(manifest).subset(first=n):
        audio = cut.load_audio()[0].astype(np.float32)
        (a, ta), (b, tb) = (stream_through(be, bundle, audio) for be in backends)
        worst = max(worst, max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True)))
        same += ta == tb
        count += 1
    return (f"utterances {count}, identical transcripts {same}, "
            f"max abs diff of log-probs {worst:.2e}")


if __name__ == "__main__":
    print(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 100))
