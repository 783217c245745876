"""Vosk-compatible WebSocket server (the vosk-server protocol), on its own port (`vosk_port`).

Vosk's clients (vosk-server's test scripts, its browser and telephony clients) speak this:

    > {"config": {"sample_rate": 16000, "words": 1, "max_alternatives": 0, "phrase_list": [...]}}
    > <binary: 16-bit little-endian mono PCM>          (any number of frames)
    < {"partial": "..."}   or, when an utterance ended, {"text": "...", "result": [...]}
    > {"eof": 1}
    < the final result of the remaining audio, then close 1000

The config message is optional (sample_rate 16000 when absent) and may come more than once
before the first audio; unknown config keys are ignored, as vosk-server does. Every audio frame
gets exactly one reply. `words: 1` adds `result: [{"word", "start", "end", "conf"}]`;
`max_alternatives: K > 0` turns every result into `{"alternatives": [{"text", "confidence",
"result"?}]}` (the beam decoder's n-best, K clipped to 10; `confidence` is the log probability
of the alternative, or the hypothesis confidence when there is one hypothesis). `phrase_list`
biases the beam towards the phrases (hotwords), it is not a hard grammar as in Kaldi.

Errors: `{"error": "<code>: <message>"}` then a close (1007 bad data or config, 1008 policy,
1009 frame too large, 1011 internal, 1013 overloaded, 1001 shutdown); the finals owed for the
audio already accepted come first, as one result. This module translates only; streams are
`App.open` streams (same limits, Batch Dispatch, metrics). The translation (`VoskOptions`,
`parse_message`, `Replies`) has no I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from models.audio import AudioError
from server.app import App, Stream, discard
from server.audio_in import AudioFormat
from server.dispatch import Overloaded, StreamError
from server.session import Event, Final, Partial, SessionError
from server.ws import CLOSE, DEFAULT_BOOST, authorized, conn_log, until_gone

log = logging.getLogger("chorus.vosk")
MAX_ALTERNATIVES = 10  # the native limit; vosk clients asking for more get 10


class VoskError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class VoskOptions:
    sample_rate: int = 16_000
    words: bool = False
    max_alternatives: int = 0
    phrase_list: tuple[str, ...] = ()

    def updated(self, config: Any) -> VoskOptions:
        """These options with a `config` object's known keys applied (unknown keys ignored)."""
        if not isinstance(config, dict):
            raise VoskError("bad_config", f'"config" must be a JSON object, got {config!r}')
        rate, words = self.sample_rate, self.words
        alts, phrases = self.max_alternatives, self.phrase_list
        if "sample_rate" in config:
            r = config["sample_rate"]
            if isinstance(r, bool) or not isinstance(r, int | float) or not math.isfinite(r) \
                    or r != int(r):
                raise VoskError("bad_config", "sample_rate must be a whole number of Hz (e.g. "
                                              f"16000 or 16000.0), got {r!r}")
            rate = int(r)
        if "words" in config:
            w = config["words"]
            if not isinstance(w, bool | int) or w not in (0, 1):
                raise VoskError("bad_config", f"words must be 0, 1, true or false, got {w!r}")
            words = bool(w)
        if "max_alternatives" in config:
            k = config["max_alternatives"]
            if isinstance(k, bool) or not isinstance(k, int) or k < 0:
                raise VoskError("bad_config", f"max_alternatives must be an integer >= 0, "
                                              f"got {k!r}")
            alts = min(k, MAX_ALTERNATIVES)
        if "phrase_list" in config:
            p = config["phrase_list"]
            if not isinstance(p, list) or not all(isinstance(x, str) for x in p):
                raise VoskError("bad_config", f"phrase_list must be a list of strings, got {p!r}")
            phrases = tuple(x for x in p if x.strip())
        return VoskOptions(rate, words, alts, phrases)

    def session_overrides(self) -> dict[str, Any]:
        """The native SessionConfig fields for these options (validated by App.open)."""
        over: dict[str, Any] = {
            "format": AudioFormat("pcm_s16le", self.sample_rate, 1),
            "interim_results": True, "continuous": True,
            "max_alternatives": max(1, self.max_alternatives),
            "hotwords": tuple((p, DEFAULT_BOOST) for p in self.phrase_list)}
        if self.max_alternatives > 1:
            over["decoder"] = "beam"  # the n-best
        return over


def parse_message(msg: str | bytes) -> tuple[str, Any]:
    """A frame -> ("audio", bytes) | ("config", obj) | ("eof", None); VoskError otherwise."""
    if isinstance(msg, bytes):
        return "audio", msg
    try:
        obj = json.loads(msg)
    except (ValueError, RecursionError):
        raise VoskError("invalid_json", f"text message is not JSON: {msg[:40]!r}; expected "
                                        '{"config": {...}} or {"eof": 1}') from None
    if isinstance(obj, dict) and "config" in obj:
        return "config", obj["config"]
    if isinstance(obj, dict) and "eof" in obj:
        return "eof", None
    raise VoskError("unknown_type", f"unknown text message {msg[:40]!r}; expected "
                                    '{"config": {...}} or {"eof": 1} (audio goes in binary frames)')


class Replies:
    """Native events -> vosk replies, one per audio frame and one after eof."""

    def __init__(self, options: VoskOptions):
        self.opt = options
        self.partial = ""  # the current utterance's text so far

    def result(self, finals: list[Final]) -> dict[str, Any]:
        """One vosk result for the finals (joined; none: the empty result)."""
        text = " ".join(f.text for f in finals if f.text)
        words = [{"word": w.word, "start": w.start, "end": w.end, "conf": w.confidence}
                 for f in finals for w in f.words]
        if self.opt.max_alternatives <= 0:
            return {"text": text, "result": words} if self.opt.words and words else {"text": text}
        if len(finals) == 1 and finals[0].alternatives:
            alts = [{"text": t, "confidence": s} for t, s in finals[0].alternatives]
        else:
            conf = min((f.confidence for f in finals), default=0.0)
            alts = [{"text": text, "confidence": conf}]
        if self.opt.words:  # word times are known for the best hypothesis only
            for a in alts:
                a["result"] = words if a["text"] == text else []
        return {"alternatives": alts[: self.opt.max_alternatives]}

    def for_audio(self, events: list[Event]) -> dict[str, Any]:
        """The reply to one audio frame: a result when an utterance ended, else the partial."""
        finals = [e for e in events if isinstance(e, Final)]
        for e in events:
            if isinstance(e, Partial):
                self.partial = e.text
        if finals:
            self.partial = ""
            return self.result(finals)
        return {"partial": self.partial}

    def for_eof(self, events: list[Event]) -> dict[str, Any]:
        return self.result([e for e in events if isinstance(e, Final)])


class _Conversation:
    def __init__(self, app: App, ws: Any):
        self.app, self.ws = app, ws
        self.options = VoskOptions()
        self.stream: Stream | None = None
        self.replies: Replies | None = None

    def open(self) -> Stream:
        if self.stream is None:
            try:
                self.stream = self.app.open(self.app.session_config(
                    **self.options.session_overrides()))
            except AudioError as exc:
                raise VoskError("bad_config", str(exc)) from None
            self.replies = Replies(self.options)
        return self.stream

    async def next_message(self) -> str | bytes:
        idle_s = self.app.cfg.limits.idle_timeout_s
        recv = asyncio.ensure_future(self.ws.recv())
        drain = asyncio.ensure_future(self.app.drain_event.wait())
        try:
            done, _ = await asyncio.wait({recv, drain}, timeout=idle_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            discard(drain)
            if not recv.done():
                discard(recv)
        if recv in done:
            return recv.result()
        if drain in done:
            raise VoskError("server_shutdown", "the server is shutting down; reconnect elsewhere")
        raise VoskError("idle_timeout", f"no message for {idle_s:g} seconds "
                                        "(limits.idle_timeout_s)")

    async def send(self, reply: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(reply))

    async def run(self) -> None:
        while True:
            kind, value = parse_message(await self.next_message())
            if kind == "config":
                if self.stream is not None:
                    raise VoskError("bad_config", "config after the audio started: send it first")
                self.options = self.options.updated(value)
            elif kind == "audio":
                stream = self.open()
                try:
                    events = await stream.feed(value)
                except AudioError as exc:
                    raise VoskError("bad_audio", str(exc)) from None
                assert self.replies is not None
                await self.send(self.replies.for_audio(events))
            else:  # eof
                stream = self.open()
                assert self.replies is not None
                await self.send(self.replies.for_eof(await stream.finish()))
                await self.ws.close(1000)
                return

    async def converse(self) -> None:
        code, message = None, ""
        try:
            await self.run()
        except VoskError as exc:
            code, message = exc.code, str(exc)
        except SessionError as exc:
            code, message = exc.code, str(exc)
        except Overloaded as exc:
            code, message = "overloaded", str(exc)
        except StreamError as exc:
            code, message = "internal", str(exc)
        except Exception as exc:  # the connection closed, or a bug: keep the server up
            from websockets.exceptions import ConnectionClosed

            if isinstance(exc, ConnectionClosed):
                return
            log.exception("vosk stream failed")
            code, message = "internal", f"{type(exc).__name__}: {exc}"
        if code is None:
            return
        self.app.metrics.errors.labels(code).inc()
        log.info("vosk stream=%s error=%s %s", self.stream.sid if self.stream else "-", code,
                 message)
        with contextlib.suppress(Exception):  # the client may be gone already
            if self.stream is not None and code != "internal" and self.replies is not None:
                finals = await self.stream.owed_finals()
                if finals:  # owed finals first, as one result
                    await self.send(self.replies.result(finals))
            await self.send({"error": f"{code}: {message}"})
            await self.ws.close(CLOSE.get(code, 1008), code)


async def handle(app: App, ws: Any) -> None:
    """One connection; the stream is closed whatever happens (the client gone included)."""
    conv = _Conversation(app, ws)
    try:
        work = await until_gone(ws, conv.converse())
    finally:
        if conv.stream is not None:
            conv.stream.close()
    if not work.cancelled():
        work.result()


def make_process_request(app: App) -> Any:
    """The handshake: the native API keys (Bearer header or ?token=) and capacity, any path."""
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    def respond(status: int, reason: str, body: bytes, extra: dict[str, str] | None = None) -> Any:
        return Response(status, reason, Headers({"Content-Type": "text/plain",
                                                 "Content-Length": str(len(body)),
                                                 **(extra or {})}), body)

    def process_request(connection: Any, request: Any) -> Any:
        if not authorized(app, request.headers, urlparse(request.path).query):
            return respond(401, "Unauthorized", b"missing or invalid API key (Authorization: "
                                                b"Bearer KEY or ?token=KEY)\n")
        taken = app.dispatcher.active_streams - app.detached_streams
        if app.draining or taken >= app.dispatcher.cfg.max_streams:
            app.dispatcher.metrics.refused += 1
            return respond(503, "Service Unavailable", b"at capacity; retry later\n",
                           {"Retry-After": "1"})
        return None

    return process_request


async def serve_vosk(app: App, *, ssl: Any = None) -> Any:
    """Listen on `vosk_port`; returns the websockets Server (close() + wait_closed())."""
    from websockets.asyncio.server import serve

    return await serve(lambda ws: handle(app, ws), app.cfg.host, app.cfg.vosk_port, ssl=ssl,
                       process_request=make_process_request(app),
                       max_size=2 * app.cfg.limits.max_frame_bytes, max_queue=64,
                       logger=conn_log)
