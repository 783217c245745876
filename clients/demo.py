"""`chorus demo`: what `make serve` runs until the server exists.

Synthesizes a sentence with espeak-ng and runs the streaming feature front end on it. It says
plainly that recognition is not built yet (see the open issues), rather than pretending.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

SENTENCE = "chorus is listening"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="offline front-end demo (the server is not built yet)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not shutil.which("espeak-ng"):
        raise SystemExit("espeak-ng is not installed: run `make system` (Debian package espeak-ng)")
    from models.cli import run as features

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "demo.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), SENTENCE], check=True)
        print(f"synthesized {SENTENCE!r} with espeak-ng (22.05 kHz, resampled to 16 kHz)")
        features(argparse.Namespace(audio=[wav], chunk_ms=100.0, pcen=False))
    print("The streaming server and the default model are not built yet; "
          "`make serve` will start them once they land.")
    return 0
