"""`chorus stream`: send audio files to a server's WebSocket /v1/stream, print the results.

Files of any format/rate are decoded and resampled locally to 16 kHz PCM16, then sent in
100 ms frames (paced in real time with --realtime, as a microphone would). Partials go to
stderr (one updating line), finals to stdout (text, or JSON lines with --format jsonl).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stream", help="stream audio files to a Chorus server over WebSocket")
    p.add_argument("audio", nargs="+", type=Path)
    p.add_argument("--url", default="ws://127.0.0.1:8000/v1/stream")
    p.add_argument("--api-key", default=None)
    p.add_argument("--realtime", action="store_true", help="pace frames at real time")
    p.add_argument("--format", choices=("text", "jsonl"), default="text")
    p.add_argument("--continuous", action="store_true", help="a final per utterance")
    p.add_argument("--hotword", action="append", default=[], help="phrase to boost (repeat)")
    p.add_argument("--cafile", default=None, help="CA / self-signed cert to trust for wss://")
    p.set_defaults(func=run)


def stream_file(url: str, pcm: bytes, *, api_key: str | None = None, realtime: bool = False,
                continuous: bool = False, hotwords: list[str] | None = None,
                cafile: str | None = None, on_partial=None) -> list[dict]:  # type: ignore[no-untyped-def]
    import ssl

    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    ctx = ssl.create_default_context(cafile=cafile) if url.startswith("wss://") else None
    finals: list[dict] = []
    frame = 3200  # 100 ms of 16 kHz PCM16
    with connect(url, additional_headers=headers, ssl=ctx, max_size=None) as ws:
        ws.send(json.dumps({"type": "start", "continuous": continuous,
                            "hotwords": hotwords or []}))
        ready = json.loads(ws.recv())
        if ready.get("type") != "ready":
            raise RuntimeError(f"server refused the stream: {ready}")
        t0 = time.monotonic()

        def drain(block: bool) -> bool:
            while True:
                try:
                    msg = json.loads(ws.recv(timeout=None if block else 0))
                except TimeoutError:
                    return False
                if msg["type"] == "partial" and on_partial:
                    on_partial(msg["text"])
                elif msg["type"] == "final":
                    finals.append(msg)
                elif msg["type"] == "error":
                    raise RuntimeError(f"server error {msg['code']}: {msg['message']}")
                elif msg["type"] == "end":
                    return True

        for k, i in enumerate(range(0, len(pcm), frame)):
            if realtime:
                time.sleep(max(0.0, t0 + k * 0.1 - time.monotonic()))
            ws.send(pcm[i : i + frame])
            drain(block=False)
        ws.send(json.dumps({"type": "stop"}))
        try:
            drain(block=True)
        except ConnectionClosed:
            pass
    return finals


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from models.audio import load_audio

    for path in args.audio:
        audio = load_audio(path, sample_rate=16_000)
        pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()

        def show(text: str) -> None:
            if sys.stderr.isatty():
                sys.stderr.write("\r\x1b[K" + text[-120:])
                sys.stderr.flush()

        try:
            finals = stream_file(args.url, pcm, api_key=args.api_key, realtime=args.realtime,
                                 continuous=args.continuous, hotwords=args.hotword,
                                 cafile=args.cafile, on_partial=show)
        except (OSError, RuntimeError) as exc:
            raise SystemExit(f"chorus stream: {path}: {exc}") from exc
        if sys.stderr.isatty():
            sys.stderr.write("\r\x1b[K")
        text = " ".join(f["text"] for f in finals if f["text"])
        if args.format == "text":
            print(text if len(args.audio) == 1 else f"{path}\t{text}", flush=True)
        else:
            print(json.dumps({"path": str(path), "text": text,
                              "words": [w for f in finals for w in f["words"]]}), flush=True)
    return 0
