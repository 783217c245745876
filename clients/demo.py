"""`chorus demo`: synthesize a sentence with espeak-ng and transcribe it with a bundle, streaming.

A one-command check that the installation works offline: TTS -> 16 kHz -> streaming model ->
partials as they come -> the final with word timings.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

SENTENCE = "turn on the kitchen lights"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="synthesize a sentence and transcribe it (offline check)")
    p.add_argument("--text", default=SENTENCE)
    p.add_argument("--voice", default="en-us", help="espeak-ng voice")
    p.add_argument("--bundle", type=Path, default=None, help="default: the shipped bundle")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not shutil.which("espeak-ng"):
        raise SystemExit("espeak-ng is not installed: run `make system` (Debian package espeak-ng)")
    from models.audio import load_audio
    from models.bundle import BundleError, load
    from models.streaming import StreamingTranscriber

    try:
        bundle = load(args.bundle)
    except BundleError as exc:
        raise SystemExit(f"chorus demo: {exc}") from exc
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "demo.wav"
        subprocess.run(["espeak-ng", "-v", args.voice, "-w", str(wav), args.text], check=True)
        audio = load_audio(wav, sample_rate=bundle.features.sample_rate)
    print(f"said ({args.voice}): {args.text}")
    stream = StreamingTranscriber(bundle)
    piece = bundle.features.sample_rate // 10  # 100 ms
    last = ""
    for i in range(0, audio.size, piece):
        text = stream.accept_waveform(audio[i : i + piece]).text
        if text != last:
            print(f"  partial: {text}")
            last = text
    final = stream.finalize()
    print(f"heard: {final.text}")
    for w in final.words:
        print(f"  {w.start:6.2f}-{w.end:6.2f}s  {w.confidence:.2f}  {w.word}")
    return 0
