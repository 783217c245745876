"""OpenAI-compatible HTTP transcription on its own port (`http_port`): a small HTTP/1.1 server.

    POST /v1/audio/transcriptions   multipart/form-data: file, model, language, prompt,
                                    response_format (json | text | srt | vtt | verbose_json),
                                    timestamp_granularities[] (word | segment), temperature
    GET  /v1/models                 the model ids accepted by `model`
    GET  /healthz

The websockets server behind `ws_port` parses GET requests without a body only, so uploads get
this listener (asyncio streams, keep-alive, Content-Length bodies; no chunked uploads: 411).
The file is decoded (any format libsndfile reads) and run as one `App.open` stream (continuous:
a segment per utterance) through Batch Dispatch, so the native limits, capacity and drain
apply. API keys: `Authorization: Bearer KEY` when the server has keys. Errors are OpenAI's
shape, {"error": {"message", "type", "param", "code"}}: 400 a bad field (param names it), 401
a bad key, 404 / 405 an unknown route or method, 411 no Content-Length, 413 an upload over
`max_upload_bytes`, 415 a body that is not multipart/form-data, 503 at capacity or draining.
The request parsing and the response rendering (`parse_form`, `TranscriptionRequest`,
`render`) have no I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import email.policy
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.audio import AudioError, load_audio
from server.app import App, api_key_ok
from server.dispatch import Overloaded, StreamError
from server.session import Final, SessionError
from server.whole import recognize_samples

log = logging.getLogger("chorus.openai")
MODEL_ID = "chorus"
MODEL_ALIASES = ("whisper-1",)  # what unmodified OpenAI clients send by default
FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("word", "segment")
LANGUAGES = ("en", "english")
MAX_HEADER_BYTES = 64 * 1024
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 411: "Length Required", 413: "Payload Too Large",
           415: "Unsupported Media Type", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 503: "Service Unavailable"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.param, self.code, self.kind = status, param, code, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": self.kind, "param": self.param,
                          "code": self.code}}


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


def parse_form(content_type: str, body: bytes) -> dict[str, list[str | Upload]]:
    """A multipart/form-data body -> {field: [values]} (files as Upload)."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(415, f"Content-Type must be multipart/form-data, got {content_type!r}",
                       code="unsupported_media_type")
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not msg.is_multipart():
        raise ApiError(400, "the multipart/form-data body could not be parsed (boundary?)")
    fields: dict[str, list[str | Upload]] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        value: str | Upload = Upload(filename, data) if filename is not None \
            else data.decode("utf-8", "replace")
        fields.setdefault(name, []).append(value)
    return fields


@dataclass(frozen=True)
class TranscriptionRequest:
    file: Upload
    model: str
    response_format: str = "json"
    granularities: tuple[str, ...] = ()
    language: str | None = None
    prompt: str | None = None

    @classmethod
    def from_form(cls, form: dict[str, list[str | Upload]]) -> TranscriptionRequest:
        def text(name: str) -> str | None:
            values = form.get(name)
            if not values:
                return None
            if not isinstance(values[-1], str):
                raise ApiError(400, f"{name} must be a form field, not a file", param=name)
            return values[-1]

        files = form.get("file") or []
        upload = files[-1] if files else None
        if not isinstance(upload, Upload):
            raise ApiError(400, "file is required: the audio file to transcribe", param="file")
        model = text("model")
        if not model:
            raise ApiError(400, "model is required", param="model")
        if model not in (MODEL_ID, *MODEL_ALIASES):
            raise ApiError(400, f"model {model!r} does not exist; GET /v1/models lists "
                                f"{MODEL_ID!r}", param="model", code="model_not_found")
        fmt = text("response_format") or "json"
        if fmt not in FORMATS:
            raise ApiError(400, f"response_format must be one of {list(FORMATS)}, got {fmt!r}",
                           param="response_format")
        grans = [g for g in form.get("timestamp_granularities[]", []) +
                 form.get("timestamp_granularities", []) if isinstance(g, str)]
        for g in grans:
            if g not in GRANULARITIES:
                raise ApiError(400, f"timestamp_granularities[] must be 'word' or 'segment', "
                                    f"got {g!r}", param="timestamp_granularities")
        if grans and fmt != "verbose_json":
            raise ApiError(400, "timestamp_granularities[] needs response_format=verbose_json",
                           param="timestamp_granularities")
        lang = text("language")
        if lang and lang.lower() not in LANGUAGES:
            raise ApiError(400, f"language {lang!r} is not supported by this model; it "
                                "transcribes English ('en')", param="language")
        if (text("stream") or "false").lower() not in ("false", "0"):
            raise ApiError(400, "stream is not supported here; use the WebSocket /v1/stream",
                           param="stream")
        temp = text("temperature")
        if temp is not None:
            try:
                float(temp)
            except ValueError:
                raise ApiError(400, f"temperature must be a number, got {temp!r}",
                               param="temperature") from None
        return cls(upload, model, fmt, tuple(dict.fromkeys(grans)), lang, text("prompt"))


def _stamp(t: float, sep: str) -> str:
    ms = round(t * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


def render(req: TranscriptionRequest, finals: list[Final], duration: float) -> tuple[str, str]:
    """The finals -> (content type, body) in the requested response_format."""
    segs = [f for f in finals if f.text]
    text = " ".join(f.text for f in segs)
    fmt = req.response_format
    if fmt == "json":
        return "application/json", json.dumps({"text": text})
    if fmt == "text":
        return "text/plain; charset=utf-8", text + "\n"
    if fmt == "srt":
        return "text/plain; charset=utf-8", "".join(
            f"{i}\n{_stamp(f.start, ',')} --> {_stamp(f.end, ',')}\n{f.text}\n\n"
            for i, f in enumerate(segs, 1))
    if fmt == "vtt":
        return "text/vtt; charset=utf-8", "WEBVTT\n\n" + "".join(
            f"{_stamp(f.start, '.')} --> {_stamp(f.end, '.')}\n{f.text}\n\n" for f in segs)
    out: dict[str, Any] = {"task": "transcribe", "language": "english",
                           "duration": round(duration, 3), "text": text}
    grans = req.granularities or ("segment",)
    if "segment" in grans:
        out["segments"] = [{"id": i, "seek": 0, "start": f.start, "end": f.end, "text": f.text,
                            "tokens": [], "temperature": 0.0,
                            "avg_logprob": float(np.log(max(f.confidence, 1e-6))),
                            "compression_ratio": 1.0, "no_speech_prob": 0.0}
                           for i, f in enumerate(segs)]
    if "word" in grans:
        out["words"] = [{"word": w.word, "start": w.start, "end": w.end}
                        for f in segs for w in f.words]
    return "application/json", json.dumps(out)


async def transcribe(app: App, req: TranscriptionRequest) -> tuple[str, str]:
    try:
        # decoding a file of up to 25 MiB must not hold up the event loop (the live streams)
        audio = await asyncio.to_thread(load_audio, req.file.data,
                                        sample_rate=app.bundle.features.sample_rate)
    except AudioError as exc:
        raise ApiError(400, f"Invalid file format: {exc}", param="file",
                       code="invalid_file_format") from None
    rate = app.bundle.features.sample_rate
    try:  # one stream, or with endpoint.vad one per speech segment (server/whole.py)
        finals = await recognize_samples(app, app.session_config(interim_results=False,
                                                                 continuous=True), audio)
    except Overloaded as exc:
        raise ApiError(503, str(exc), code="overloaded", kind="server_error") from None
    except SessionError as exc:
        if exc.code == "server_shutdown":  # draining: retry on another instance
            raise ApiError(503, str(exc), code=exc.code, kind="server_error") from None
        raise ApiError(400, str(exc), param="file", code=exc.code) from None
    except StreamError as exc:
        raise ApiError(500, str(exc), code="internal", kind="server_error") from None
    return render(req, finals, audio.size / rate)


def _bearer_ok(app: App, headers: dict[str, str]) -> bool:
    if not app.cfg.api_keys:
        return True
    auth = headers.get("authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    return api_key_ok(token, app.cfg.api_keys)


async def route(app: App, method: str, path: str, headers: dict[str, str],
                body: bytes) -> tuple[int, str, bytes]:
    """One request -> (status, content type, body); ApiError for every failure."""
    path = path.split("?", 1)[0]
    if path == "/healthz":
        return 200, "text/plain", b"ok\n"
    routes = {"/v1/models": "GET", "/v1/audio/transcriptions": "POST"}
    if path not in routes:
        raise ApiError(404, f"unknown route {path!r}; this server has POST "
                            "/v1/audio/transcriptions and GET /v1/models", code="not_found")
    if method != routes[path]:
        raise ApiError(405, f"{path} takes {routes[path]}, not {method}",
                       code="method_not_allowed")
    if not _bearer_ok(app, headers):
        raise ApiError(401, "Incorrect API key provided (Authorization: Bearer KEY)",
                       code="invalid_api_key")
    if path == "/v1/models":
        created = int(time.time())
        models = [{"id": m, "object": "model", "created": created, "owned_by": "chorus"}
                  for m in (MODEL_ID, *MODEL_ALIASES)]
        return 200, "application/json", json.dumps({"object": "list", "data": models}).encode()
    form = await asyncio.to_thread(parse_form, headers.get("content-type", ""), body)
    req = TranscriptionRequest.from_form(form)
    ctype, text = await transcribe(app, req)
    return 200, ctype, text.encode("utf-8")


class HttpServer:
    def __init__(self, app: App):
        self.app = app
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[Any]] = set()  # connections
        self.busy: set[asyncio.Task[Any]] = set()  # connections with a request in flight

    async def start(self, ssl: Any = None) -> HttpServer:
        self.server = await asyncio.start_server(self._client, self.app.cfg.host,
                                                 self.app.cfg.http_port, ssl=ssl,
                                                 limit=MAX_HEADER_BYTES,
                                                 reuse_port=self.app.worker is not None)
        return self

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; whether the connection stays open for another."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"),
                                          self.app.cfg.limits.idle_timeout_s)
        except TimeoutError:  # an idle keep-alive connection
            return False
        except asyncio.LimitOverrunError:
            await self._send(writer, 431, ApiError(431, "request headers too large"), False)
            return False
        except asyncio.IncompleteReadError:
            return False
        task = asyncio.current_task()
        assert task is not None
        self.busy.add(task)
        try:
            return await self._request(head, reader, writer)
        finally:
            self.busy.discard(task)

    async def _request(self, head: bytes, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> bool:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await self._send(writer, 400, ApiError(400, "malformed HTTP request line"), False)
            return False
        method, path, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        keep = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
        body = b""
        if "transfer-encoding" in headers:
            await self._send(writer, 411, ApiError(411, "chunked uploads are not supported: "
                                                        "send a Content-Length"), False)
            return False
        length = headers.get("content-length", "0")
        if not length.isdigit():
            await self._send(writer, 400, ApiError(400, f"bad Content-Length {length!r}"), False)
            return False
        n = int(length)
        limit = self.app.cfg.max_upload_bytes
        if n > limit:
            await self._send(writer, 413, ApiError(
                413, f"upload of {n} bytes exceeds the limit of {limit} bytes (max_upload_bytes)",
                param="file", code="file_too_large"), False)
            # a lingering close: take (and drop) what the client is still sending for a few
            # seconds, so it reads the 413 instead of a connection reset
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._skip(reader, n), 5)
            return False
        if n:
            if headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = await reader.readexactly(n)
        try:
            status, ctype, out = await route(self.app, method, path, headers, body)
        except ApiError as exc:
            await self._send(writer, exc.status, exc, keep)
            return keep
        except Exception as exc:  # a bug: logged; the server stays up
            log.exception("HTTP %s %s failed", method, path)
            await self._send(writer, 500, ApiError(500, f"{type(exc).__name__}: {exc}",
                                                   code="internal", kind="server_error"), keep)
            return keep
        await self._write(writer, status, ctype, out, keep)
        return keep

    @staticmethod
    async def _skip(reader: asyncio.StreamReader, n: int) -> None:
        while n > 0:
            chunk = await reader.read(min(n, 1 << 16))
            if not chunk:
                return
            n -= len(chunk)

    async def _send(self, writer: asyncio.StreamWriter, status: int, err: ApiError,
                    keep: bool) -> None:
        extra = {"Retry-After": "1"} if status == 503 else {}
        if status == 401:
            extra["WWW-Authenticate"] = "Bearer"
        await self._write(writer, status, "application/json", json.dumps(err.body()).encode(),
                          keep, extra)

    async def _write(self, writer: asyncio.StreamWriter, status: int, ctype: str, body: bytes,
                     keep: bool, extra: dict[str, str] | None = None) -> None:
        headers = {"Content-Type": ctype, "Content-Length": str(len(body)),
                   "Connection": "keep-alive" if keep else "close", **(extra or {})}
        head = f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        writer.write(head.encode("latin-1") + body)
        await writer.drain()

    async def close(self, timeout: float = 5.0) -> None:
        """Stop listening; requests in flight get `timeout` seconds to finish."""
        if self.server is not None:
            self.server.close()
        if self.busy:
            await asyncio.wait(set(self.busy), timeout=timeout)
        for t in set(self.tasks):
            t.cancel()
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1)


async def serve_http(app: App, *, ssl: Any = None) -> HttpServer:
    return await HttpServer(app).start(ssl)
