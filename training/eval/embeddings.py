"""How far apart a model's encoder puts the clean and the corrupted view of the same utterance.

`python -m training.eval.embeddings --bundle B --clean CLEAN.jsonl.gz --corrupted C1 [C2 ...]`
pairs each corrupted utterance with its clean original (a corrupted cut's id is the clean id
plus "-<set name>", as `chorus data corrupt` writes them), encodes both (the offline batched
forward, identical to streaming), and reports per set, over all frames: the mean relative
distance ||e_corrupted - e_clean|| / ||e_clean|| (scale-free, so a model cannot look robust by
shrinking its embeddings) and the mean absolute difference per dimension (the L1 term that
robust training minimises). The corruptions keep the length, so frames pair one to one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from training.eval.run import Utterance, forward_all, load_manifest


def pair(clean: list[Utterance], corrupted: list[Utterance]) -> list[tuple[Utterance, Utterance]]:
    """(clean, corrupted) pairs: the clean id is the longest prefix of the corrupted id that is
    followed by "-" and names a clean utterance."""
    by_id = {u.id: u for u in clean}
    out = []
    for u in corrupted:
        cuts = [i for i, ch in enumerate(u.id) if ch == "-"]
        match = next((u.id[:i] for i in reversed(cuts) if u.id[:i] in by_id), None)
        if match is None:
            raise ValueError(f"corrupted utterance {u.id}: no clean utterance whose id it extends")
        out.append((by_id[match], u))
    return out


def distance(bundle: Any, pairs: list[tuple[Utterance, Utterance]], *, progress: bool = True
             ) -> dict[str, float]:
    clean, _ = forward_all(bundle, [c for c, _ in pairs], progress=progress, desc="clean",
                           encoder_only=True)
    noisy, _ = forward_all(bundle, [n for _, n in pairs], progress=progress, desc="corrupted",
                           encoder_only=True)
    rel, l1, frames = 0.0, 0.0, 0
    for c, n in zip(clean, noisy, strict=True):
        t = min(c.shape[0], n.shape[0])  # equal unless a resampler rounded a sample off
        c, n = c[:t].double(), n[:t].double()  # (T', D)
        rel += float(((n - c).norm(dim=1) / c.norm(dim=1).clamp(min=1e-9)).sum())
        l1 += float((n - c).abs().mean(dim=1).sum())
        frames += t
    return {"relative_l2": rel / max(frames, 1), "l1": l1 / max(frames, 1), "frames": frames,
            "utterances": len(pairs)}


def main(argv: list[str] | None = None) -> int:
    from models.bundle import load

    p = argparse.ArgumentParser(prog="python -m training.eval.embeddings", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default="models/pretrained/default")
    p.add_argument("--clean", required=True, help="the clean manifest the sets were made from")
    p.add_argument("--corrupted", nargs="+", required=True, help="corrupted manifests")
    p.add_argument("--limit", type=int, default=None, help="first N corrupted utterances per set")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    bundle = load(args.bundle)
    clean = load_manifest(args.clean)
    result: dict[str, Any] = {"bundle": args.bundle, "clean": args.clean, "sets": {}}
    for path in args.corrupted:
        pairs = pair(clean, load_manifest(path, args.limit))
        result["sets"][Path(path).name] = distance(bundle, pairs, progress=not args.no_progress)
        print(json.dumps({Path(path).name: result["sets"][Path(path).name]}), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
