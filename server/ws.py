"""WebSocket `/v1/stream` and the HTTP routes on the same port (websockets library).

Protocol (docs/protocol.md): the client sends a JSON `start` message, binary audio frames, and
a JSON `stop`; the server answers `ready`, `partial`s, `final`s and `end`, or an `error`
{"type": "error", "code", "message"} followed by a close code that fits (1007 bad data, 1008
policy, 1009 too big, 1011 internal, 1013 try again later). Finals owed for audio already
accepted are sent before the error (server/control.py says when not). HTTP: /healthz,
/readyz, /metrics, / (the browser page). This module only translates; the work is in
server.control, server.app and server.session.

Resume: `ready` carries a `resume_token`, every result the `acked` audio bytes. A connection
lost without a close frame (TCP reset / EOF, keepalive timeout) before the stream ended
detaches its stream (App.detach) instead of closing it; a new connection sends `resume`
{"token", "offset", "finals"} in place of `start` and continues it.
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

from server.app import App, api_key_ok, discard, final_dict
from server.audio_in import AudioFormat
from server.control import (
    Audio,
    Command,
    Conversation,
    End,
    Failed,
    Output,
    Ready,
    Results,
    Resume,
    Start,
    Stop,
    Vocabulary,
    control_error,
    inbox,
)
from server.session import Final, Partial, SessionError

log = logging.getLogger("chorus.ws")
PAGE = Path(__file__).parent / "static" / "index.html"
START_FIELDS = {"type", "format", "interim_results", "continuous", "max_alternatives", "decoder",
                "hotwords"}
RESUME_FIELDS = {"type", "token", "offset", "finals"}
DEFAULT_BOOST = 1.5
WORDS = Vocabulary(start="start", audio="binary audio", stop="stop", resume="resume")
CLOSE = {"invalid_json": 1007, "bad_audio": 1007, "bad_config": 1007, "unknown_type": 1008,
         "audio_before_start": 1008, "expected_start": 1008, "stream_too_long": 1008,
         "idle_timeout": 1008, "audio_after_end": 1008, "frame_too_large": 1009,
         "client_too_slow": 1008, "overloaded": 1013, "internal": 1011, "server_shutdown": 1001,
         "resume_failed": 1008, "resumed_elsewhere": 1008}


class _QuietConnections(logging.Filter):
    """What websockets logs per connection, minus the noise: an HTTP route answered (a health
    probe, a metrics scrape) is not a "rejected connection", and a TCP connection closed before
    a complete HTTP request (a load balancer's port check, a scan) is not an error with a
    traceback (it goes to DEBUG in one line). Real refusals (401, 404, 503) stay at INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "connection rejected (%d %s)" and isinstance(record.args, tuple):
            status = record.args[0]
            return not isinstance(status, int) or status >= 400
        if record.msg == "opening handshake failed" and record.exc_info:
            exc: BaseException | None = record.exc_info[1]
            for _ in range(8):  # down the cause chain (InvalidMessage from EOFError)
                if exc is None:
                    break
                if isinstance(exc, EOFError | ConnectionError):
                    log.debug("connection closed before a complete HTTP request: %s", exc)
                    return False
                exc = exc.__cause__ or exc.__context__
        return True


conn_log = logging.getLogger("chorus.ws.conn")  # the websockets server's and connections' logger
conn_log.addFilter(_QuietConnections())


def authorized(app: App, headers: Any, query: str) -> bool:
    keys = app.cfg.api_keys
    if not keys:
        return True
    auth = headers.get("Authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    token = token or next(iter(parse_qs(query).get("token", [])), "")
    return api_key_ok(token, keys)


def make_process_request(app: App, *, private: bool = False) -> Any:
    """The HTTP side of a WebSocket port (health, readiness, metrics, the page) and the checks
    before a handshake (path, API key, capacity). `private`: a worker's Unix socket, where
    sibling workers read this worker's own metrics and relay resumes (no key, no capacity
    check: a relayed resume was admitted by the worker the client reached)."""
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    def respond(status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> Any:
        headers = Headers({"Content-Type": ctype, "Content-Length": str(len(body)), **(extra or {})})
        reason = {200: "OK", 401: "Unauthorized", 404: "Not Found", 503: "Service Unavailable"}
        return Response(status, reason.get(status, ""), headers, body)

    async def process_request(connection: Any, request: Any) -> Any:
        url = urlparse(request.path)
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if upgrade and url.path != "/v1/stream":  # e.g. ws://host:port with the path left off
            return respond(404, f"no WebSocket endpoint at {url.path}: streams are served at "
                                "/v1/stream\n".encode(), "text/plain")
        if url.path == "/healthz":
            return respond(200, b"ok\n", "text/plain")
        if url.path == "/readyz":
            ok = app.ready
            return respond(200 if ok else 503, b"ready\n" if ok else b"not ready\n", "text/plain")
        if url.path == "/metrics":
            body = app.metrics.render() if private else await app.metrics_text()
            return respond(200, body, "text/plain; version=0.0.4; charset=utf-8")
        if url.path in ("/", "/index.html"):
            body = PAGE.read_bytes() if PAGE.is_file() else b"<h1>Chorus</h1>"
            return respond(200, body, "text/html; charset=utf-8")
        if url.path != "/v1/stream":
            return respond(404, b"not found\n", "text/plain")
        if private:
            return None
        if not authorized(app, request.headers, url.query):
            return respond(401, b"missing or invalid API key (Authorization: Bearer KEY or "
                                b"?token=KEY)\n", "text/plain")
        # detached streams hold slots but may be resumed (no new slot): a resume must get in
        if app.draining or app.attached_streams >= app.cfg.max_streams:
            app.dispatcher.metrics.refused += 1
            return respond(503, b"at capacity; retry later\n", "text/plain", {"Retry-After": "1"})
        return None  # go on with the WebSocket handshake

    return process_request


def json_bool(msg: dict[str, Any], name: str, default: bool) -> bool:
    """A boolean field: a real JSON true/false (the string "false" is not false)."""
    value = msg.get(name, default)
    if not isinstance(value, bool):
        raise control_error("bad_config", f"{name} must be a JSON boolean (true or false), "
                                          f"got {value!r}")
    return value


def parse_hotwords(hot: Any) -> tuple[tuple[str, float], ...]:
    """`hotwords`: a list of phrases or of {"phrase": str, "boost": number} objects."""
    def bad() -> SessionError:
        return control_error("bad_config", 'hotwords must be a list of strings or of {"phrase": '
                                           f'str, "boost": number}}; got {hot!r}')

    if not isinstance(hot, list):
        raise bad()
    out = []
    for h in hot:
        if isinstance(h, str):
            out.append((h, DEFAULT_BOOST))
        elif (isinstance(h, dict) and set(h) == {"phrase", "boost"} and isinstance(h["phrase"], str)
              and isinstance(h["boost"], int | float) and not isinstance(h["boost"], bool)):
            out.append((h["phrase"], float(h["boost"])))
        else:
            raise bad()
    return tuple(out)


JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean",
              type(None): "null"}


def parse_control(text: str) -> dict[str, Any]:
    """A text frame -> a control message: a JSON object (a SessionError, invalid_json, otherwise)."""
    try:
        ctl = json.loads(text)
    except json.JSONDecodeError as exc:
        raise control_error("invalid_json", f"text message is not JSON: {exc}") from None
    except RecursionError:  # the C decoder's guard against stack exhaustion
        raise control_error("invalid_json", "text message is JSON nested too deeply; expected "
                                            'a JSON object like {"type": "start", ...}') from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits (int_max_str_digits)
        raise control_error("invalid_json", f"text message is JSON the server cannot read: {exc}; "
                                            'expected a JSON object like {"type": "start", ...}'
                            ) from None
    if not isinstance(ctl, dict):
        kind = JSON_TYPES.get(type(ctl), type(ctl).__name__)
        raise control_error("invalid_json", 'text message must be a control message: expected a '
                                            'JSON object like {"type": "start", ...}, got a JSON '
                                            f"{kind} {text[:40]!r}")
    return ctl


def parse_start(msg: dict[str, Any], app: App) -> Any:
    unknown = set(msg) - START_FIELDS
    if unknown:
        raise control_error("bad_config", f"unknown start field(s) {sorted(unknown)}; "
                                          f"known: {sorted(START_FIELDS - {'type'})}")
    fmt = msg.get("format", {})
    if not isinstance(fmt, dict) or set(fmt) - {"encoding", "sample_rate", "channels"}:
        raise control_error("bad_config", "format must be an object with encoding, sample_rate, "
                                          f"channels; got {fmt!r}")
    try:
        return app.session_config(
            format=AudioFormat(fmt.get("encoding", "pcm_s16le"), fmt.get("sample_rate", 16000),
                               fmt.get("channels", 1)),
            interim_results=json_bool(msg, "interim_results", True),
            continuous=json_bool(msg, "continuous", True),
            max_alternatives=msg.get("max_alternatives", 1), decoder=msg.get("decoder"),
            hotwords=parse_hotwords(msg.get("hotwords", [])))
    except TypeError as exc:
        raise control_error("bad_config", str(exc)) from None


def parse_resume(msg: dict[str, Any]) -> tuple[str, int, int]:
    """`resume`: {"token": str, "offset": int >= 0, "finals": int >= 0}, all required."""
    unknown = set(msg) - RESUME_FIELDS
    if unknown:
        raise control_error("bad_config", f"unknown resume field(s) {sorted(unknown)}; "
                                          f"known: {sorted(RESUME_FIELDS - {'type'})}")
    token = msg.get("token")
    if not isinstance(token, str) or not token:
        raise control_error("bad_config", "resume token must be the resume_token string of the "
                                          f"ready message, got {token!r}")
    counts = []
    for name, what in (("offset", "the stream byte offset of the next audio byte sent (the "
                                  "last acked received)"),
                       ("finals", "the number of finals received")):
        value = msg.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise control_error("bad_config", f"resume {name} must be a non-negative integer, "
                                              f"{what}; got {value!r}")
        counts.append(value)
    return token, counts[0], counts[1]


def event_dict(e: Any, acked: int) -> dict[str, Any]:
    """A result, with `acked`: the audio bytes the stream has taken (a client resends from it)."""
    if isinstance(e, Final):
        return {**final_dict(e), "acked": acked}
    assert isinstance(e, Partial)
    return {"type": "partial", "text": e.text, "stability": e.stability,
            "audio_processed": e.audio_processed, "words": [w.__dict__ for w in e.words],
            "acked": acked, "processing_latency_ms": e.processing_latency_ms}


async def until_gone(ws: Any, conversation: Any) -> asyncio.Future[Any]:
    """Run a connection's conversation, cancelled the moment the client goes away (so its slot
    is freed at once and its buffered audio is not computed for nobody); the finished task."""
    work = asyncio.ensure_future(conversation)
    gone = asyncio.ensure_future(ws.wait_closed())
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        discard(gone)
        if not work.done():
            work.cancel()  # the client went away (or the server stops): closes the stream
        await asyncio.wait({work})
    return work


async def handle(app: App, ws: Any) -> None:
    """One connection: the conversation until it ends or the client goes away."""
    work = await until_gone(ws, converse(app, ws))
    if not work.cancelled():
        work.result()


async def converse(app: App, ws: Any) -> None:
    """The protocol on one connection: start, audio, stop; results back; errors as documented.
    The stream is closed whatever happens (cancellation included), or kept for a resume when
    the connection was lost."""
    conn = _Connection(app, ws)
    try:
        await conn.report(await conn.exchange())
    finally:
        discard(conn.send_task)
        conn.conv.release(lost=conn.lost())


def command_of(msg: str | bytes, app: App) -> Command:
    """A WebSocket frame -> a control-protocol command (a binary frame is audio)."""
    if isinstance(msg, bytes):
        return Audio(msg)
    ctl = parse_control(msg)
    kind = ctl.get("type")
    if kind == "start":
        return Start(parse_start(ctl, app), resumable=True)
    if kind == "resume":
        return Resume(*parse_resume(ctl))
    if kind == "stop":
        return Stop()
    raise control_error("unknown_type", f"unknown message type {kind!r}; expected 'start', "
                                        "'resume' or 'stop' (audio goes in binary frames)")


class _Connection:
    """One WebSocket: the bounded send queue and its sender, and the stream's conversation."""

    def __init__(self, app: App, ws: Any):
        self.app, self.ws = app, ws
        self.out: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=app.cfg.send_queue)
        sock = ws.transport.get_extra_info("socket")
        if sock is not None and app.cfg.ws_send_buffer > 0:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, app.cfg.ws_send_buffer)
        self.conv = Conversation(app, WORDS, protocol="ws")
        self.send_task = asyncio.create_task(self.sender())
        self.stopped = False  # `end` queued
        self.ended = False  # `end` (or an error) written: the stream is over for the client

    def lost(self) -> bool:
        """The connection went away before the stream ended for the client, and not by the
        client's choice (no close frame came: TCP reset / EOF, keepalive timeout, or the task
        cancelled): the stream is kept for a resume."""
        return self.conv.error is None and not self.ended and self.ws.protocol.close_rcvd is None

    def messages(self, out: Output) -> list[dict[str, Any]]:
        """A control-protocol output -> the JSON messages it is on this protocol."""
        stream = self.conv.stream
        if isinstance(out, Ready):
            msg = {"type": "ready", "stream_id": out.stream.sid,
                   "sample_rate": self.app.bundle.features.sample_rate, "acked": out.stream.acked}
            if out.stream.token is not None:
                msg["resume_token"] = out.stream.token
            if out.resumed:
                msg["resumed"] = True
            return [msg, *(event_dict(e, out.stream.acked) for e in out.owed)]
        assert stream is not None
        if isinstance(out, Results):
            return [event_dict(e, stream.acked) for e in out.events]
        assert isinstance(out, End)
        self.stopped = True
        return [{"type": "end", "audio_processed": round(out.audio_seconds, 3),
                 "acked": out.acked}]

    async def sender(self) -> None:
        while (msg := await self.out.get()) is not None:
            await self.ws.send(json.dumps(msg))

    def put(self, msg: dict[str, Any]) -> None:
        try:
            self.out.put_nowait(msg)
        except asyncio.QueueFull:
            raise control_error("client_too_slow", f"more than {self.app.cfg.send_queue} "
                                                   "results waiting: the client is not reading"
                                ) from None

    async def exchange(self) -> Failed | None:
        """Messages in, results out, until `end` (-> None) or an error (-> what to report;
        None too when the connection closed)."""
        from websockets.exceptions import ConnectionClosed

        try:
            async with contextlib.aclosing(inbox(self.app, self.ws.recv,
                                                 preempt=self.conv.owner)) as frames:
                async for frame in frames:
                    cmd = command_of(frame, self.app)
                    if (owner := self.conv.held_elsewhere(cmd)) is not None:
                        await relay(self.ws, self.app.worker.ws_socket(owner), frame)
                        return None  # the owner's conversation ended (its close passed on)
                    for out in await self.conv.handle(cmd):
                        for msg in self.messages(out):
                            self.put(msg)
                    if self.stopped:
                        return None
        except ConnectionClosed:
            sent = self.ws.protocol.close_sent
            if sent is not None and sent.code == 1009:  # websockets refused the frame itself
                self.conv.abandon("frame_too_large", f"a frame over twice max_frame_bytes: "
                                                     f"closed {sent.code} by the server")
            return None  # the connection is gone: nobody to report to
        except Exception as exc:  # noqa: BLE001 - every error is reported by its code
            return await self.conv.fail(exc)
        return None

    async def report(self, failed: Failed | None) -> None:
        """Owed finals, then the error (if any), what is queued, then the close that fits."""
        out, stream = self.out, self.conv.stream
        if failed is not None:
            queued = [*(event_dict(e, stream.acked) for e in failed.owed if stream is not None),
                      {"type": "error", "code": failed.code, "message": failed.message,
                       **({"reason": failed.reason} if failed.reason is not None else {})}]
            for msg in queued:  # owed finals first
                with contextlib.suppress(asyncio.QueueFull):
                    out.put_nowait(msg)
        with contextlib.suppress(asyncio.QueueFull):
            out.put_nowait(None)
        if failed is not None and failed.code == "client_too_slow":
            discard(self.send_task)  # stuck on a client that does not read: drop the backlog
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(self.send_task, 10)
        task = self.send_task
        # after `stop`, the stream is over once `end` is written; if the connection dropped
        # first, it is kept so a resume can deliver the finals and `end`
        self.ended = self.stopped and task.done() and not task.cancelled() \
            and task.exception() is None
        if failed is not None:
            await self.ws.close(CLOSE.get(failed.code, 1008), failed.code)


# a relayed connection that ended without a close frame (the owning worker went away)
RELAY_LOST = (1011, "internal")


async def relay(ws: Any, path: str, first: str | bytes) -> None:
    """A resume whose stream another worker holds (server.workers): the rest of this
    connection is that worker's, through its private socket `path`: `first` (the resume) and
    every later frame go there, every reply comes back, and its close (code and reason) is
    this connection's. A client that goes away without a close frame is passed on the same
    way (the owner detaches the stream again for the next resume)."""
    from websockets.asyncio.client import unix_connect
    from websockets.exceptions import ConnectionClosed

    async with unix_connect(path, uri="ws://localhost/v1/stream", max_size=None,
                            ping_interval=None) as inner:
        async def up() -> None:
            with contextlib.suppress(ConnectionClosed):
                await inner.send(first)
                async for frame in ws:
                    await inner.send(frame)

        async def down() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for msg in inner:
                    await ws.send(msg)

        tasks = {asyncio.ensure_future(up()), down_task := asyncio.ensure_future(down())}
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                discard(t)
            if ws.protocol.close_rcvd is None and not down_task.done():
                inner.transport.abort()  # lost (or this task cancelled): the owner detaches
        if down_task.done():  # the owner closed: its close is the client's
            code, reason = inner.close_code, inner.close_reason or ""
            if code in (None, 1005, 1006):
                code, reason = RELAY_LOST
            await ws.close(code, reason)
        else:  # the client closed: so does the relay
            await inner.close()


async def serve_ws_private(app: App) -> Any:
    """A worker's private WebSocket + HTTP port (a Unix socket in the supervisor's run
    directory): its own /metrics for the worker that answers a scrape, and resumes of its
    streams relayed by the worker the client reached."""
    from websockets.asyncio.server import unix_serve

    assert app.worker is not None
    return await unix_serve(lambda ws: handle(app, ws), app.worker.ws_socket(),
                            process_request=make_process_request(app, private=True),
                            max_size=None, max_queue=64, compression=None, logger=conn_log)


def make_process_response(app: App) -> Any:
    """With workers (server.workers), every handshake answer names the worker that took the
    connection (`X-Chorus-Worker`): for operators and the tests of the relay."""
    if app.worker is None:
        return None
    index = str(app.worker.index)

    def process_response(connection: Any, request: Any, response: Any) -> Any:
        response.headers["X-Chorus-Worker"] = index
        return response

    return process_response


async def serve_ws(app: App, *, ssl: Any = None) -> Any:
    """Start listening; returns the websockets Server (close() + wait_closed() to stop).
    No permessage-deflate: PCM audio hardly compresses, and inflating every client frame
    cost the server ~4 % of its CPU under load (profiled); results are small JSON."""
    from websockets.asyncio.server import serve

    return await serve(lambda ws: handle(app, ws), app.cfg.host, app.cfg.ws_port, ssl=ssl,
                       process_request=make_process_request(app),
                       process_response=make_process_response(app),
                       # frames up to 2x the limit get a JSON error from the session; bigger
                       # ones are refused by websockets itself (close 1009)
                       max_size=2 * app.cfg.limits.max_frame_bytes, max_queue=64, compression=None,
                       logger=conn_log, reuse_port=app.worker is not None)
