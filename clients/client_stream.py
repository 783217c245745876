"""`chorus client stream FILE|--mic`: stream audio to a server's WebSocket, print the results.

Files of any format/rate are decoded and resampled locally to 16 kHz PCM16 and sent in 100 ms
frames, paced in real time (as a microphone would) unless --fast. --mic captures the default
input device with sounddevice until Ctrl-C. Partials update one live line on stderr; finals
print as lines on stdout (JSON lines with --json).

A dropped connection (no close frame: network change, TCP reset) is resumed: the client
reconnects (--retries times, with exponential backoff) and sends `resume` with the stream's
token, the last `acked` offset and the number of finals it has, then resends the audio from
that offset (kept since the last ack), so the transcript is that of an uninterrupted stream.
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
RETRIES = 5  # reconnections per stream after a dropped connection
BACKOFF_S = 0.2  # first wait before reconnecting; doubled each further try
MAX_BACKOFF_S = 5.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stream", help="stream a file or the microphone over WebSocket")
    p.add_argument("audio", nargs="*", type=Path, help="audio files (any format and rate)")
    p.add_argument("--mic", action="store_true", help="stream the default microphone instead")
    p.add_argument("--url", default="ws://127.0.0.1:8000/v1/stream",
                   help="the server: ws[s]:// or http[s]://HOST:PORT, path /v1/stream when left "
                        "off (default %(default)s)")
    p.add_argument("--api-key", default=None)
    p.add_argument("--fast", action="store_true", help="send as fast as possible (no pacing)")
    p.add_argument("--json", action="store_true", help="JSON lines on stdout")
    p.add_argument("--continuous", action="store_true", help="a final per utterance")
    p.add_argument("--hotword", action="append", default=[], help="phrase to boost (repeat)")
    p.add_argument("--cafile", default=None, help="CA / self-signed cert to trust for wss://")
    p.add_argument("--retries", type=int, default=RETRIES,
                   help="reconnect and resume this many times after a dropped connection (0: off)")
    p.set_defaults(func=run)


def stream_url(url: str) -> str:
    """What `--url` may be: ws[s]://HOST:PORT[/PATH] or http[s]://HOST:PORT[/PATH] (the
    server's HTTP address: the same port); no path means the streaming endpoint /v1/stream.
    ValueError, saying what is expected, for anything else."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"--url {url!r}: expected ws://HOST:PORT (or wss://, http://, https://), "
                         "e.g. ws://127.0.0.1:8000/v1/stream")
    path = parts.path if parts.path not in ("", "/") else "/v1/stream"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


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


class ServerError(RuntimeError):
    """The server sent an `error` message (`code`, `reason` for resume_failed)."""

    def __init__(self, msg: dict[str, Any]):
        super().__init__(f"server error {msg['code']}: {msg['message']}")
        self.code, self.reason = msg["code"], msg.get("reason")


def stream(url: str, frames: Iterator[bytes], *, api_key: str | None = None,
           continuous: bool = False, hotwords: list[str] | None = None, cafile: str | None = None,
           on_partial: Callable[[str], None] | None = None,
           on_final: Callable[[dict[str, Any]], None] | None = None,
           retries: int = RETRIES, backoff_s: float = BACKOFF_S,
           on_reconnect: Callable[[int, Exception], None] | None = None) -> list[dict[str, Any]]:
    """Send frames to /v1/stream; returns the finals (also passed to on_final as they come).

    When the connection drops mid-stream (no close frame came), reconnects up to `retries`
    times per drop (waiting backoff_s, doubling, at most MAX_BACKOFF_S; `on_reconnect(try,
    error)` before each) and resumes the stream: the audio after the last `acked` offset is
    kept and resent, finals the client already has are not sent again. A server error (an
    `error` message, a refused handshake, a close frame) is not retried: it raises."""
    import ssl

    from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK
    from websockets.sync.client import connect

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    ctx = ssl.create_default_context(cafile=cafile) if url.startswith("wss://") else None
    finals: list[dict[str, Any]] = []
    unacked = bytearray()  # audio sent after offset `base` (what a resume resends)
    base = 0
    token: str | None = None
    stopped = False  # all audio sent and `stop` too
    frames = iter(frames)

    def take(msg: dict[str, Any]) -> bool:
        """One server message; True at `end`."""
        nonlocal base
        acked = msg.get("acked")
        if isinstance(acked, int) and acked > base:  # the server has these: no resend
            del unacked[: acked - base]
            base = acked
        kind = msg["type"]
        if kind == "partial" and on_partial:
            on_partial(msg["text"])
        elif kind == "final" and msg.get("seq", len(finals)) >= len(finals):  # never twice
            finals.append(msg)
            if on_final:
                on_final(msg)
        elif kind == "error":
            raise ServerError(msg)
        return kind == "end"

    attempt = 0  # reconnections since the last successful (re)start

    def converse(ws: Any) -> None:
        nonlocal token, stopped, attempt

        def drain(block: bool) -> bool:
            while True:
                try:
                    msg = json.loads(ws.recv(timeout=None if block else 0))
                except TimeoutError:
                    return False
                if take(msg):
                    return True

        if token is None:
            ws.send(json.dumps({"type": "start", "continuous": continuous,
                                "hotwords": hotwords or []}))
        else:
            ws.send(json.dumps({"type": "resume", "token": token, "offset": base,
                                "finals": len(finals)}))
        ready = json.loads(ws.recv())
        if ready.get("type") != "ready":
            if token is not None and ready.get("type") == "error":
                raise ServerError(ready)
            raise RuntimeError(f"server refused the stream: {ready}")
        token = ready.get("resume_token")
        attempt = 0  # connected again: the next drop gets its own tries
        step = int(RATE * FRAME_S) * 2
        for i in range(0, len(unacked), step):  # resend what the server may not have
            ws.send(bytes(unacked[i : i + step]))
        take(ready)  # after the resend: its `acked` may cover some of it (skipped server-side)
        if not stopped:
            for frame in frames:
                unacked.extend(frame)  # kept until acked, whatever happens to the send
                ws.send(frame)
                drain(block=False)
        stopped = True
        ws.send(json.dumps({"type": "stop"}))
        drain(block=True)

    while True:
        try:
            with connect(url, additional_headers=headers, ssl=ctx, max_size=None) as ws:
                try:
                    converse(ws)
                except ConnectionClosedOK:
                    pass  # the server closed after `end` (or cleanly before it)
            return finals
        except (ConnectionClosedError, OSError) as exc:  # dropped: resume if we can
            closed = getattr(exc, "rcvd", None)
            if closed is not None:  # the server closed it on purpose: not a dropped network
                raise RuntimeError(f"server closed the connection: {closed.code} "
                                   f"{closed.reason}") from exc
            if token is None or attempt >= retries:
                raise
            attempt += 1
            if on_reconnect:
                on_reconnect(attempt, exc)
            time.sleep(min(MAX_BACKOFF_S, backoff_s * 2 ** (attempt - 1)))


def run(args: argparse.Namespace) -> int:
    from websockets.exceptions import WebSocketException

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

    def reconnecting(attempt: int, exc: Exception) -> None:
        print(f"chorus client stream: connection lost ({exc}); resuming (try {attempt} of "
              f"{args.retries})", file=sys.stderr, flush=True)

    try:
        url = stream_url(args.url)
    except ValueError as exc:
        raise SystemExit(f"chorus client stream: {exc}") from None
    sources = [("mic", mic_frames())] if args.mic else \
        [(str(p), file_frames(p, fast=args.fast)) for p in args.audio]
    for name, frames in sources:
        def on_final(msg: dict[str, Any], source: str = name) -> None:
            final(msg, source)

        try:
            stream(url, frames, api_key=args.api_key, continuous=args.continuous,
                   hotwords=args.hotword, cafile=args.cafile, on_partial=partial,
                   on_final=on_final, retries=max(0, args.retries), on_reconnect=reconnecting)
        except (OSError, RuntimeError, WebSocketException) as exc:
            raise SystemExit(f"chorus client stream: {name}: {exc}") from exc
    return 0
