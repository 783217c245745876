"""`chorus client stream FILE|--mic`: stream audio to a server's WebSocket, print the results.

Files of any format/rate are decoded and resampled locally to 16 kHz PCM16 and sent in 100 ms
frames, paced in real time (as a microphone would) unless --fast. --mic captures the default
input device with sounddevice until Ctrl-C. Partials update one live line on stderr; finals
print as lines on stdout (JSON lines with --json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

RATE = 16_000
FRAME_S = 0.1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stream", help="stream a file or the microphone over WebSocket")
    p.add_argument("audio", nargs="*", type=Path, help="audio files (any format and rate)")
    p.add_argument("--mic", action="store_true", help="stream the default microphone instead")
    p.add_argument("--url", default="ws://127.0.0.1:8000/v1/stream")
    p.add_argument("--api-key", default=None)
    p.add_argument("--fast", action="store_true", help="send as fast as possible (no pacing)")
    p.add_argument("--json", action="store_true", help="JSON lines on stdout")
    p.add_argument("--continuous", action="store_true", help="a final per utterance")
    p.add_argument("--hotword", action="append", default=[], help="phrase to boost (repeat)")
    p.add_argument("--cafile", default=None, help="CA / self-signed cert to trust for wss://")
    p.set_defaults(func=run)


def file_frames(path: Path, *, fast: bool) -> Iterator[bytes]:
    from models.audio import load_audio, to_pcm16

    pcm = to_pcm16(load_audio(path, sample_rate=RATE))
    step = int(RATE * FRAME_S) * 2
    t0 = time.monotonic()
    for k, i in enumerate(range(0, len(pcm), step)):
        if not fast:
            time.sleep(max(0.0, t0 + k * FRAME_S - time.monotonic()))
        yield pcm[i : i + step]


def mic_frames() -> Iterator[bytes]:
    """Checks the input device now (a clear exit when there is none), then yields frames."""
    import queue

    try:
        import sounddevice as sd
    except (ImportError, OSError) as exc:
        raise SystemExit(f"chorus client stream --mic needs sounddevice and PortAudio: {exc}") from exc
    try:
        sd.check_input_settings(samplerate=RATE, channels=1, dtype="int16")
    except Exception as exc:  # noqa: BLE001 - PortAudio reports "no device" in several ways
        raise SystemExit(f"chorus client stream --mic: no usable input device ({exc}); "
                         "plug in a microphone or stream a file instead") from exc
    q: queue.Queue[bytes] = queue.Queue()

    def frames() -> Iterator[bytes]:
        with sd.RawInputStream(samplerate=RATE, channels=1, dtype="int16",
                               blocksize=int(RATE * FRAME_S), callback=lambda d, *_: q.put(bytes(d))):
            print("listening: speak, Ctrl-C to stop", file=sys.stderr)
            try:
                while True:
                    yield q.get()
            except KeyboardInterrupt:
                return

    return frames()


def stream(url: str, frames: Iterator[bytes], *, api_key: str | None = None,
           continuous: bool = False, hotwords: list[str] | None = None, cafile: str | None = None,
           on_partial: Callable[[str], None] | None = None,
           on_final: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Send frames to /v1/stream; returns the finals (also passed to on_final as they come)."""
    import ssl

    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    ctx = ssl.create_default_context(cafile=cafile) if url.startswith("wss://") else None
    finals: list[dict[str, Any]] = []
    with connect(url, additional_headers=headers, ssl=ctx, max_size=None) as ws:
        ws.send(json.dumps({"type": "start", "continuous": continuous,
                            "hotwords": hotwords or []}))
        ready = json.loads(ws.recv())
        if ready.get("type") != "ready":
            raise RuntimeError(f"server refused the stream: {ready}")

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
                    if on_final:
                        on_final(msg)
                elif msg["type"] == "error":
                    raise RuntimeError(f"server error {msg['code']}: {msg['message']}")
                elif msg["type"] == "end":
                    return True

        for frame in frames:
            ws.send(frame)
            drain(block=False)
        ws.send(json.dumps({"type": "stop"}))
        try:
            drain(block=True)
        except ConnectionClosed:
            pass
    return finals


def run(args: argparse.Namespace) -> int:
    if args.mic == bool(args.audio):
        raise SystemExit("chorus client stream: give audio files or --mic (not both)")
    live = sys.stderr.isatty() and not args.json

    def partial(text: str) -> None:
        if live:
            sys.stderr.write("\r\x1b[K" + text[-120:])
            sys.stderr.flush()

    def final(msg: dict[str, Any], source: str) -> None:
        if live:
            sys.stderr.write("\r\x1b[K")
        if args.json:
            print(json.dumps({"source": source, **msg}), flush=True)
        elif msg["text"]:
            print(msg["text"], flush=True)

    sources = [("mic", mic_frames())] if args.mic else \
        [(str(p), file_frames(p, fast=args.fast)) for p in args.audio]
    for name, frames in sources:
        def on_final(msg: dict[str, Any], source: str = name) -> None:
            final(msg, source)

        try:
            stream(args.url, frames, api_key=args.api_key, continuous=args.continuous,
                   hotwords=args.hotword, cafile=args.cafile, on_partial=partial,
                   on_final=on_final)
        except (OSError, RuntimeError) as exc:
            raise SystemExit(f"chorus client stream: {name}: {exc}") from exc
    return 0
