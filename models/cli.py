"""`chorus features`: inspect the streaming feature front end on audio files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("features", help="streaming fbank features of audio files (any rate)")
    p.add_argument("audio", nargs="+", type=Path)
    p.add_argument("--chunk-ms", type=float, default=100.0, help="streaming chunk size")
    p.add_argument("--pcen", action="store_true", help="PCEN instead of log compression")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from models.audio import load_audio
    from models.features import Fbank, FbankConfig, StreamingFbank

    cfg = FbankConfig(compression="pcen" if args.pcen else "log")
    fbank = Fbank(cfg)
    chunk = max(1, int(cfg.sample_rate * args.chunk_ms / 1000))
    for path in args.audio:
        wave = load_audio(path, sample_rate=cfg.sample_rate)
        offline = fbank(torch.from_numpy(wave))
        stream = StreamingFbank(fbank=fbank)
        parts = [stream.accept(wave[i : i + chunk]) for i in range(0, wave.size, chunk)]
        streamed = torch.cat(parts)
        print(json.dumps({
            "path": str(path), "seconds": round(wave.size / cfg.sample_rate, 3),
            "frames": int(offline.shape[0]), "mel_bins": cfg.num_mel_bins,
            "chunks": len(parts), "max_abs_diff_streaming_vs_offline":
                float((streamed - offline).abs().max()) if offline.numel() else 0.0,
        }))
    return 0
