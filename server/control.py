"""The control protocol of one recognition stream, shared by every streaming adapter.

Every streaming protocol here (WebSocket /v1/stream, native gRPC, Riva gRPC, Vosk) is the same
conversation: a start (or, where the protocol has it, a resume) once and first -> audio -> a
stop, results back; the shared limits (idle timeout, drain, a resume taking the stream
elsewhere); and on an error the finals owed for the audio already accepted (not after
NO_OWED_FINALS), then exactly one error with a code from one vocabulary. This module is that
conversation, once. Adapters translate their messages into `Start` / `Resume` / `Audio` /
`Stop`, and `Ready` / `Results` / `End` / `Failed` back into theirs (a JSON message and a close
code, a protobuf and a gRPC status, a Vosk reply), and keep what only their transport knows:
its send queue (`client_too_slow`) and whether a connection was lost (detach for a resume).

- `Control`: the sans-I/O state machine of the commands' order (no clock, no socket, no model):
  which command may come now, the phase it leads to, the error when it may not.
- `classify`: any exception -> (code, message, reason), the one error vocabulary (CODES).
- `Conversation`: `Control` driving a `Stream` (App.open / App.resume / feed / finish):
  `handle(command) -> outputs`, `fail(exc) -> Failed` (the owed finals, metrics, log),
  `release(lost=...)` (close, or detach for a resume when the connection was lost).
- `inbox`: a transport's incoming messages with the limits every protocol shares: the idle
  timeout, the drain, and another connection resuming the stream.

Like the `websockets` library's protocol core, the decisions live here and the adapters do the
I/O; the model steps are the Stream's (through Batch Dispatch), awaited by the Conversation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from models.audio import AudioError
from server.app import App, Stream, discard
from server.dispatch import Overloaded, StreamError
from server.resume import ResumedElsewhere, ResumeError
from server.session import Event, Final, SessionConfig, SessionError

log = logging.getLogger("chorus.control")
T = TypeVar("T")

# The error vocabulary of every streaming protocol (WebSocket codes; gRPC statuses and Vosk
# errors are mapped from these by their adapters).
CODES = ("invalid_json", "bad_audio", "bad_config", "unknown_type", "audio_before_start",
         "expected_start", "stream_too_long", "idle_timeout", "audio_after_end",
         "frame_too_large", "client_too_slow", "overloaded", "internal", "server_shutdown",
         "resume_failed", "resumed_elsewhere")
# no owed finals before these: the client is not reading, the stream went to another one, or
# the server failed (computing them would retry what failed: a batched decoding step that
# failed may already have advanced the decoder)
NO_OWED_FINALS = ("client_too_slow", "resumed_elsewhere", "internal")


def control_error(code: str, message: str) -> SessionError:
    """A protocol error of the vocabulary (the session's own errors are the same type)."""
    assert code in CODES, code
    return SessionError(code, message)


# --- commands (adapter -> protocol) and outputs (protocol -> adapter) ---------------------

@dataclass(frozen=True)
class Start:
    # the stream's settings; a callable takes the first audio bytes (Riva: the format may only
    # be known from them) and the stream opens at the first Audio
    config: SessionConfig | Callable[[bytes], SessionConfig]
    resumable: bool = False


@dataclass(frozen=True)
class Resume:
    token: str
    offset: int
    finals: int


@dataclass(frozen=True)
class Audio:
    data: bytes


@dataclass(frozen=True)
class Stop:
    pass


Command = Start | Resume | Audio | Stop


@dataclass(frozen=True)
class Ready:
    stream: Stream
    resumed: bool = False
    owed: list[Final] = field(default_factory=list)  # after a resume: the finals owed


@dataclass(frozen=True)
class Results:
    events: list[Event]


@dataclass(frozen=True)
class End:
    audio_seconds: float
    acked: int


@dataclass(frozen=True)
class Failed:
    code: str
    message: str
    reason: str | None = None  # resume_failed: why (server.resume.REASONS)
    owed: list[Final] = field(default_factory=list)  # finals owed, to send before the error


Output = Ready | Results | End | Failed


# --- the state machine ---------------------------------------------------------------------

@dataclass(frozen=True)
class Vocabulary:
    """What an adapter calls its messages, for error messages in the client's own terms."""

    start: str = "start"
    audio: str = "binary audio"
    stop: str = "stop"
    resume: str | None = "resume"  # None: the protocol has no resume
    message: str = "message"  # what one incoming unit is called ("request" for gRPC)


class Control:
    """Sans-I/O: the order of commands. Phases: idle (nothing yet) -> pending (a Start whose
    stream opens at the first audio) -> streaming -> ended (after Stop)."""

    def __init__(self, words: Vocabulary):
        self.words = words
        self.phase = "idle"

    def accept(self, cmd: Command) -> None:
        """Check that `cmd` may come now (SessionError with the code and message if not);
        the phase after it is set by `enter`."""
        w = self.words
        first = w.start + (f" (or {w.resume}, in its place)" if w.resume else "")
        if isinstance(cmd, Resume) and w.resume is None:
            raise control_error("unknown_type", f"this protocol has no resume; send {w.start}")
        if isinstance(cmd, Start | Resume):
            if self.phase != "idle":
                kind = w.start if isinstance(cmd, Start) else w.resume
                raise control_error("bad_config", f"{kind} sent twice, or after the stream "
                                                  f"started: {first} must come once, first")
        elif self.phase == "ended":
            kind = w.audio if isinstance(cmd, Audio) else w.stop
            raise control_error("audio_after_end", f"{kind} after {w.stop}: the stream has ended")
        elif self.phase == "idle":
            if isinstance(cmd, Audio):
                raise control_error("audio_before_start",
                                    f"{w.audio} before the {w.start} message: the first "
                                    f"{w.message} must carry {first}")
            raise control_error("expected_start", f"{w.stop} before {w.start}")

    def enter(self, phase: str) -> None:
        assert phase in ("pending", "streaming", "ended"), phase
        self.phase = phase


def classify(exc: BaseException, *, started: bool) -> tuple[str, str, str | None]:
    """Any exception -> (code, message, resume reason or None). Client errors keep their own
    code; an AudioError is `bad_config` before the stream opened (the format) and `bad_audio`
    after; anything unexpected is `internal` (the caller logs it)."""
    if isinstance(exc, ResumeError):
        return "resume_failed", str(exc), exc.reason
    if isinstance(exc, ResumedElsewhere):
        return "resumed_elsewhere", str(exc), None
    if isinstance(exc, SessionError):
        return exc.code, str(exc), None
    if isinstance(exc, AudioError):
        return ("bad_audio" if started else "bad_config"), str(exc), None
    if isinstance(exc, Overloaded):
        return "overloaded", str(exc), None
    if isinstance(exc, StreamError):
        return "internal", str(exc), None
    return "internal", f"internal error: {type(exc).__name__}: {exc}", None


def is_server_bug(exc: BaseException) -> bool:
    """An exception outside the vocabulary: logged with its traceback."""
    return not isinstance(exc, ResumeError | ResumedElsewhere | SessionError | AudioError
                          | Overloaded | StreamError)


# --- the conversation: the state machine driving a Stream ----------------------------------

class Conversation:
    """One stream's protocol over any transport. `owner`: the event the adapter watches (set
    when another connection resumes the stream: `inbox` then raises ResumedElsewhere)."""

    def __init__(self, app: App, words: Vocabulary, *, protocol: str = "ws"):
        self.app = app
        self.control = Control(words)
        self.protocol = protocol  # for the log
        self.owner = asyncio.Event()
        self.stream: Stream | None = None
        self.error: str | None = None  # the code being reported, once `fail` has begun
        self._pending: Callable[[bytes], SessionConfig] | None = None

    @property
    def phase(self) -> str:
        return self.control.phase

    def _open(self, config: SessionConfig, resumable: bool) -> Stream:
        self.stream = self.app.open(config, resumable=resumable, owner=self.owner)
        self.control.enter("streaming")
        return self.stream

    async def handle(self, cmd: Command) -> list[Output]:
        """One command -> what to send back (in order). Raises the error to report (pass it
        to `fail`); nothing already accepted is lost then."""
        self.control.accept(cmd)
        if isinstance(cmd, Start):
            if callable(cmd.config):
                self._pending = cmd.config
                self.control.enter("pending")
                return []
            return [Ready(self._open(cmd.config, cmd.resumable))]
        if isinstance(cmd, Resume):
            self.stream, owed = await self.app.resume(cmd.token, cmd.offset, cmd.finals,
                                                      self.owner)
            self.control.enter("streaming")
            return [Ready(self.stream, resumed=True, owed=owed)]
        if isinstance(cmd, Audio):
            out: list[Output] = []
            if self._pending is not None:  # the stream opens with its first audio
                if not cmd.data:  # nothing to tell the format from yet
                    return []
                out.append(Ready(self._open(self._pending(cmd.data), False)))
                self._pending = None
            assert self.stream is not None
            events = await self.stream.feed(cmd.data)
            return out + ([Results(events)] if events else [])
        # Stop
        stream = self.stream
        self.control.enter("ended")
        if stream is None:  # a Start whose stream never got audio: nothing to say
            return [End(0.0, 0)]
        events = await stream.finish()
        done: list[Output] = [Results(events)] if events else []
        return [*done, End(stream.session.audio_seconds, stream.acked)]

    async def fail(self, exc: BaseException) -> Failed:
        """The error to report for `exc`, with the finals owed for the audio already accepted
        (computed now); counted in chorus_errors and logged (server bugs with traceback)."""
        code, message, reason = classify(exc, started=self.stream is not None)
        if is_server_bug(exc):
            log.error("%s stream %s failed", self.protocol,
                      self.stream.sid if self.stream else "-", exc_info=exc)
        # at once: a connection lost while the owed finals compute is not a drop to resume
        # from (the stream has failed)
        self.abandon(code, message)
        if code == "resumed_elsewhere" and self.stream is not None:
            self.app.detach(self.stream)  # let go at once: the new connection waits for it
            self.stream = None
        owed: list[Final] = []
        if self.stream is not None and code not in NO_OWED_FINALS:
            owed = await self.stream.owed_finals()
        return Failed(code, message, reason, owed)

    def abandon(self, code: str, message: str) -> None:
        """The conversation ends with this error: the stream is over (closed on release, not
        kept for a resume), the error counted and logged. Alone: the transport itself ended it
        (e.g. websockets closed 1009 on a frame over twice the limit) and nothing can be sent."""
        assert code in CODES, code
        self.error = code
        self.control.enter("ended")
        self.app.metrics.errors.labels(code).inc()
        log.info("%s stream=%s error=%s %s", self.protocol,
                 self.stream.sid if self.stream else "-", code, message)

    def held_elsewhere(self, cmd: Command) -> int | None:
        """With workers (server.workers): the other worker whose stream a first `Resume`
        names, where the adapter relays the rest of the connection; None: handle it here."""
        worker = self.app.worker
        if not isinstance(cmd, Resume) or self.phase != "idle" or worker is None:
            return None
        return worker.owner(cmd.token)

    def release(self, *, lost: bool) -> None:
        """The conversation is over: close the stream and free its slot, or, when the
        connection was `lost` before the stream ended, detach it for a resume (App.detach:
        a stream that cannot be resumed is closed there)."""
        if self.stream is None:
            return
        if lost:
            self.app.detach(self.stream)
        else:
            self.stream.close()


async def inbox(app: App, receive: Callable[[], Awaitable[T]], *,
                preempt: asyncio.Event | None = None) -> AsyncGenerator[T, None]:
    """The messages `receive()` gives, until it raises StopAsyncIteration (a gRPC half-close;
    other exceptions, e.g. a closed WebSocket, propagate). Raises `idle_timeout` after
    limits.idle_timeout_s without a message, `server_shutdown` when the server starts
    draining, and ResumedElsewhere when `preempt` is set (another connection resumed this
    stream). A close (or half-close) that came with the preemption still counts; a message
    that came with it is not taken (a resuming client resends it). Use under
    contextlib.aclosing, so that no helper task is left behind."""
    idle_s = app.cfg.limits.idle_timeout_s
    drain = asyncio.ensure_future(app.drain_event.wait())
    pre = asyncio.ensure_future((preempt or asyncio.Event()).wait())
    nxt: asyncio.Future[Any] | None = None
    try:
        while True:
            nxt = asyncio.ensure_future(receive())
            done, _ = await asyncio.wait({nxt, drain, pre}, timeout=idle_s,
                                         return_when=asyncio.FIRST_COMPLETED)
            ended = nxt in done and (nxt.cancelled() or nxt.exception() is not None)
            if pre in done and not ended:
                raise ResumedElsewhere("another connection resumed this stream with its token")
            if nxt in done:
                try:
                    msg = nxt.result()
                except StopAsyncIteration:
                    return
                yield msg
                continue
            if drain in done:
                raise control_error("server_shutdown", "the server is shutting down: finals for "
                                                       "the audio received were sent; reconnect "
                                                       "elsewhere")
            raise control_error("idle_timeout", f"no message for {idle_s:g} seconds "
                                                "(limits.idle_timeout_s): finals for the audio "
                                                "received were sent")
    finally:  # also when the consumer is cancelled: the pending read must not leak
        discard(drain)
        discard(pre)
        if nxt is not None:
            discard(nxt)
