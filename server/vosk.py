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

import contextlib
import json
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from server.app import App
from server.audio_in import AudioFormat
from server.control import Audio, Conversation, Results, Start, Stop, Vocabulary, inbox
from server.session import Event, Final, Partial, SessionError
from server.ws import CLOSE, DEFAULT_BOOST, authorized, conn_log, make_process_response, until_gone

MAX_ALTERNATIVES = 10  # the native limit; vosk clients asking for more get 10


WORDS = Vocabulary(start="config", audio="audio", stop='{"eof": 1}', resume=None)


@dataclass(frozen=True)
class VoskOptions:
    sample_rate: int = 16_000
    words: bool = False
    max_alternatives: int = 0
    phrase_list: tuple[str, ...] = ()

    def updated(self, config: Any) -> VoskOptions:
        """These options with a `config` object's known keys applied (unknown keys ignored)."""
        if not isinstance(config, dict):
            raise SessionError("bad_config", f'"config" must be a JSON object, got {config!r}')
        rate, words = self.sample_rate, self.words
        alts, phrases = self.max_alternatives, self.phrase_list
        if "sample_rate" in config:
            r = config["sample_rate"]
            if isinstance(r, bool) or not isinstance(r, int | float) or not math.isfinite(r) \
                    or r != int(r):
                raise SessionError("bad_config", "sample_rate must be a whole number of Hz (e.g. "
                                              f"16000 or 16000.0), got {r!r}")
            rate = int(r)
        if "words" in config:
            w = config["words"]
            if not isinstance(w, bool | int) or w not in (0, 1):
                raise SessionError("bad_config", f"words must be 0, 1, true or false, got {w!r}")
            words = bool(w)
        if "max_alternatives" in config:
            k = config["max_alternatives"]
            if isinstance(k, bool) or not isinstance(k, int) or k < 0:
                raise SessionError("bad_config", f"max_alternatives must be an integer >= 0, "
                                              f"got {k!r}")
            alts = min(k, MAX_ALTERNATIVES)
        if "phrase_list" in config:
            p = config["phrase_list"]
            if not isinstance(p, list) or not all(isinstance(x, str) for x in p):
                raise SessionError("bad_config", f"phrase_list must be a list of strings, got {p!r}")
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
    """A frame -> ("audio", bytes) | ("config", obj) | ("eof", None); SessionError otherwise."""
    if isinstance(msg, bytes):
        return "audio", msg
    try:
        obj = json.loads(msg)
    except (ValueError, RecursionError):
        raise SessionError("invalid_json", f"text message is not JSON: {msg[:40]!r}; expected "
                                        '{"config": {...}} or {"eof": 1}') from None
    if isinstance(obj, dict) and "config" in obj:
        return "config", obj["config"]
    if isinstance(obj, dict) and "eof" in obj:
        return "eof", None
    raise SessionError("unknown_type", f"unknown text message {msg[:40]!r}; expected "
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


class _Connection:
    """One Vosk WebSocket: its options (config messages before the audio) and conversation;
    the stream starts with the first audio (or eof), as vosk-server's recognizer does."""

    def __init__(self, app: App, ws: Any):
        self.app, self.ws = app, ws
        self.options = VoskOptions()
        self.conv = Conversation(app, WORDS, protocol="vosk")
        self.replies = Replies(self.options)

    async def send(self, reply: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(reply))

    async def events(self, cmd: Audio | Stop) -> list[Event]:
        if self.conv.phase == "idle":  # the first audio (or eof) starts the stream
            self.replies = Replies(self.options)
            await self.conv.handle(Start(self.app.session_config(
                **self.options.session_overrides())))
        return [e for o in await self.conv.handle(cmd) if isinstance(o, Results)
                for e in o.events]

    async def run(self) -> None:
        async with contextlib.aclosing(inbox(self.app, self.ws.recv)) as frames:
            async for frame in frames:
                kind, value = parse_message(frame)
                if kind == "config":
                    if self.conv.phase != "idle":
                        raise SessionError("bad_config", "config after the audio started: "
                                                         "send it first")
                    self.options = self.options.updated(value)
                elif kind == "audio":
                    await self.send(self.replies.for_audio(await self.events(Audio(value))))
                else:  # eof
                    await self.send(self.replies.for_eof(await self.events(Stop())))
                    await self.ws.close(1000)
                    return

    async def converse(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await self.run()
            return
        except ConnectionClosed:
            return  # the client went away: nobody to report to
        except Exception as exc:  # noqa: BLE001 - every error is reported by its code
            failed = await self.conv.fail(exc)
        with contextlib.suppress(Exception):  # the client may be gone already
            if failed.owed:  # owed finals first, as one result
                await self.send(self.replies.result(failed.owed))
            await self.send({"error": f"{failed.code}: {failed.message}"})
            await self.ws.close(CLOSE.get(failed.code, 1008), failed.code)


async def handle(app: App, ws: Any) -> None:
    """One connection; the stream is closed whatever happens (the client gone included)."""
    conn = _Connection(app, ws)
    try:
        work = await until_gone(ws, conn.converse())
    finally:
        conn.conv.release(lost=False)
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
        if app.draining or app.attached_streams >= app.cfg.max_streams:  # over all workers
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
                       process_response=make_process_response(app),
                       max_size=2 * app.cfg.limits.max_frame_bytes, max_queue=64, compression=None,
                       logger=conn_log, reuse_port=app.worker is not None)
