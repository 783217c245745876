"""WebSocket `/v1/stream` and the HTTP routes on the same port (websockets library).

Protocol (docs/protocol.md): the client sends a JSON `start` message, binary audio frames, and
a JSON `stop`; the server answers `ready`, `partial`s, `final`s and `end`, or an `error`
{"type": "error", "code", "message"} followed by a close code that fits (1007 bad data, 1008
policy, 1009 too big, 1011 internal, 1013 try again later). Whatever the error, finals owed for
audio already accepted are sent before the error. HTTP: /healthz, /readyz, /metrics, / (the
browser page). This module only translates; the work is in server.app / server.session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from models.audio import AudioError
from server.app import App, Stream, final_dict
from server.audio_in import AudioFormat
from server.dispatch import Overloaded, StreamError
from server.session import Final, Partial, SessionError

log = logging.getLogger("chorus.ws")
PAGE = Path(__file__).parent / "static" / "index.html"
START_FIELDS = {"type", "format", "interim_results", "continuous", "max_alternatives", "decoder",
                "hotwords"}
DEFAULT_BOOST = 1.5
CLOSE = {"invalid_json": 1007, "bad_audio": 1007, "bad_config": 1007, "unknown_type": 1008,
         "audio_before_start": 1008, "expected_start": 1008, "stream_too_long": 1008,
         "idle_timeout": 1008, "audio_after_end": 1008, "frame_too_large": 1009,
         "client_too_slow": 1008, "overloaded": 1013, "internal": 1011, "server_shutdown": 1001}


class ProtocolError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def authorized(app: App, headers: Any, query: str) -> bool:
    keys = app.cfg.api_keys
    if not keys:
        return True
    auth = headers.get("Authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    token = token or next(iter(parse_qs(query).get("token", [])), "")
    return bool(token) and token in keys


def make_process_request(app: App) -> Any:
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    def respond(status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> Any:
        headers = Headers({"Content-Type": ctype, "Content-Length": str(len(body)), **(extra or {})})
        reason = {200: "OK", 401: "Unauthorized", 404: "Not Found", 503: "Service Unavailable"}
        return Response(status, reason.get(status, ""), headers, body)

    def process_request(connection: Any, request: Any) -> Any:
        url = urlparse(request.path)
        if url.path == "/healthz":
            return respond(200, b"ok\n", "text/plain")
        if url.path == "/readyz":
            ok = app.ready
            return respond(200 if ok else 503, b"ready\n" if ok else b"not ready\n", "text/plain")
        if url.path == "/metrics":
            return respond(200, app.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
        if url.path in ("/", "/index.html"):
            body = PAGE.read_bytes() if PAGE.is_file() else b"<h1>Chorus</h1>"
            return respond(200, body, "text/html; charset=utf-8")
        if url.path != "/v1/stream":
            return respond(404, b"not found\n", "text/plain")
        if not authorized(app, request.headers, url.query):
            return respond(401, b"missing or invalid API key (Authorization: Bearer KEY or "
                                b"?token=KEY)\n", "text/plain")
        if app.draining or app.dispatcher.active_streams >= app.dispatcher.cfg.max_streams:
            app.dispatcher.metrics.refused += 1
            return respond(503, b"at capacity; retry later\n", "text/plain", {"Retry-After": "1"})
        return None  # go on with the WebSocket handshake

    return process_request


def parse_start(msg: dict[str, Any], app: App) -> Any:
    unknown = set(msg) - START_FIELDS
    if unknown:
        raise ProtocolError("bad_config", f"unknown start field(s) {sorted(unknown)}; "
                                          f"known: {sorted(START_FIELDS - {'type'})}")
    fmt = msg.get("format", {})
    if not isinstance(fmt, dict) or set(fmt) - {"encoding", "sample_rate", "channels"}:
        raise ProtocolError("bad_config", "format must be an object with encoding, sample_rate, "
                                          f"channels; got {fmt!r}")
    hot = msg.get("hotwords", [])
    try:
        hotwords = tuple((h, DEFAULT_BOOST) if isinstance(h, str) else (h["phrase"], float(h["boost"]))
                         for h in hot)
    except (TypeError, KeyError, ValueError):
        raise ProtocolError("bad_config", 'hotwords must be a list of strings or of {"phrase": str, '
                                          f'"boost": number}}; got {hot!r}') from None
    try:
        return app.session_config(
            format=AudioFormat(fmt.get("encoding", "pcm_s16le"), fmt.get("sample_rate", 16000),
                               fmt.get("channels", 1)),
            interim_results=bool(msg.get("interim_results", True)),
            continuous=bool(msg.get("continuous", True)),
            max_alternatives=msg.get("max_alternatives", 1), decoder=msg.get("decoder"),
            hotwords=hotwords)
    except TypeError as exc:
        raise ProtocolError("bad_config", str(exc)) from None


def event_dict(e: Any) -> dict[str, Any]:
    if isinstance(e, Final):
        return final_dict(e)
    assert isinstance(e, Partial)
    return {"type": "partial", "text": e.text, "stability": e.stability,
            "audio_processed": e.audio_processed, "words": [w.__dict__ for w in e.words]}


async def handle(app: App, ws: Any) -> None:
    out: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=app.cfg.send_queue)
    sock = ws.transport.get_extra_info("socket")
    if sock is not None and app.cfg.ws_send_buffer > 0:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, app.cfg.ws_send_buffer)
    stream: Stream | None = None

    async def sender() -> None:
        while (msg := await out.get()) is not None:
            await ws.send(json.dumps(msg))

    def put(msg: dict[str, Any]) -> None:
        try:
            out.put_nowait(msg)
        except asyncio.QueueFull:
            raise ProtocolError("client_too_slow", f"more than {app.cfg.send_queue} results "
                                                   "waiting: the client is not reading") from None

    async def next_message() -> str | bytes:
        recv = asyncio.ensure_future(ws.recv())
        drain = asyncio.ensure_future(app.drain_event.wait())
        done, _ = await asyncio.wait({recv, drain}, timeout=app.cfg.limits.idle_timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        drain.cancel()
        if recv in done:
            return recv.result()
        recv.cancel()
        if drain in done:
            raise ProtocolError("server_shutdown", "the server is shutting down: finals for the "
                                                   "audio received were sent; reconnect elsewhere")
        raise ProtocolError("idle_timeout", f"no message for {app.cfg.limits.idle_timeout_s:g} "
                                            "seconds (limits.idle_timeout_s)")

    send_task = asyncio.create_task(sender())
    code, message = None, ""
    try:
        while True:
            msg = await next_message()
            if isinstance(msg, bytes):
                if stream is None:
                    raise ProtocolError("audio_before_start", "binary audio before the start message")
                for e in await stream.feed(msg):
                    put(event_dict(e))
                continue
            try:
                ctl = json.loads(msg)
            except json.JSONDecodeError as exc:
                raise ProtocolError("invalid_json", f"text message is not JSON: {exc}") from None
            kind = ctl.get("type") if isinstance(ctl, dict) else None
            if kind == "start":
                if stream is not None:
                    raise ProtocolError("bad_config", "start sent twice")
                stream = app.open(parse_start(ctl, app))
                put({"type": "ready", "stream_id": stream.sid,
                     "sample_rate": app.bundle.features.sample_rate})
            elif kind == "stop":
                if stream is None:
                    raise ProtocolError("expected_start", "stop before start")
                for e in await stream.finish():
                    put(event_dict(e))
                put({"type": "end", "audio_processed": round(stream.session.audio_seconds, 3)})
                break
            else:
                raise ProtocolError("unknown_type", f"unknown message type {kind!r}; expected "
                                                    "'start' or 'stop' (audio goes in binary frames)")
    except ProtocolError as exc:
        code, message = exc.code, str(exc)
    except SessionError as exc:
        code, message = exc.code, str(exc)
    except AudioError as exc:
        code, message = ("bad_config" if stream is None else "bad_audio"), str(exc)
    except Overloaded as exc:
        code, message = "overloaded", str(exc)
    except StreamError as exc:
        code, message = "internal", str(exc)
    except Exception as exc:  # the connection closed, or a bug: log it, keep the server up
        from websockets.exceptions import ConnectionClosed

        if not isinstance(exc, ConnectionClosed):
            log.exception("stream %s failed", stream.sid if stream else "-")
            code, message = "internal", f"{type(exc).__name__}: {exc}"
    try:
        if code is not None:
            app.metrics.errors.labels(code).inc()
            if stream is not None and code != "internal":
                for e in await stream.owed_finals():  # owed finals first
                    with contextlib.suppress(asyncio.QueueFull):
                        out.put_nowait(event_dict(e))
            with contextlib.suppress(asyncio.QueueFull):
                out.put_nowait({"type": "error", "code": code, "message": message})
        with contextlib.suppress(asyncio.QueueFull):
            out.put_nowait(None)
        if code == "client_too_slow":
            send_task.cancel()  # it is stuck on a client that does not read: drop the backlog
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(send_task, 10)
        if code is not None:
            log.info("stream=%s error=%s %s", stream.sid if stream else "-", code, message)
            await ws.close(CLOSE.get(code, 1008), code)
    finally:
        send_task.cancel()
        if stream is not None:
            stream.close()


async def serve_ws(app: App, *, ssl: Any = None) -> Any:
    """Start listening; returns the websockets Server (close() + wait_closed() to stop)."""
    from websockets.asyncio.server import serve

    return await serve(lambda ws: handle(app, ws), app.cfg.host, app.cfg.ws_port, ssl=ssl,
                       process_request=make_process_request(app),
                       # frames up to 2x the limit get a JSON error from the session; bigger
                       # ones are refused by websockets itself (close 1009)
                       max_size=2 * app.cfg.limits.max_frame_bytes, max_queue=64)
