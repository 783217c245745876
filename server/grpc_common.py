"""What both gRPC services share: a streaming call's requests as control-protocol commands
(server/control.py: drain, idle timeout, a resume elsewhere), its bounded responses (slow
readers), the one map from the protocol's error codes to gRPC statuses, and auth. Whole-audio
recognition is server/whole.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from server.app import App, api_key_ok, discard
from server.control import Failed, classify, control_error, inbox, is_server_bug

log = logging.getLogger("chorus.grpc")
OPEN_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")  # no API key needed
# the control protocol's error codes -> gRPC status; every other code is a client error
# (bad config or audio, order of requests, limits): INVALID_ARGUMENT
STATUS = {"resume_failed": grpc.StatusCode.FAILED_PRECONDITION,
          "resumed_elsewhere": grpc.StatusCode.ABORTED,
          "client_too_slow": grpc.StatusCode.RESOURCE_EXHAUSTED,
          "overloaded": grpc.StatusCode.RESOURCE_EXHAUSTED,
          "idle_timeout": grpc.StatusCode.DEADLINE_EXCEEDED,
          "server_shutdown": grpc.StatusCode.UNAVAILABLE,
          "internal": grpc.StatusCode.INTERNAL}


def requests_of(app: App, requests: AsyncIterator[Any],
                preempt: asyncio.Event | None = None) -> AsyncGenerator[Any, None]:
    """A streaming call's requests until the client half-closes, with the limits of every
    protocol (control.inbox: idle timeout, drain, a resume elsewhere); use it under
    contextlib.aclosing."""
    it = aiter(requests)
    return inbox(app, lambda: anext(it), preempt=preempt)


class RelayedStatus(Exception):
    """How a call relayed to its stream's worker ended there (server.workers): passed on as is
    (status, details, trailing metadata) by abort_for."""

    def __init__(self, status: Any, details: str, trailing: tuple[tuple[str, str], ...]):
        super().__init__(details)
        self.status, self.details, self.trailing = status, details, trailing


class CallFailed(Exception):
    """A streaming call's error, already classified and counted by its Conversation (its owed
    finals were sent): abort_for maps it without classifying or logging again."""

    def __init__(self, failed: Failed):
        super().__init__(failed.message)
        self.failed = failed


@dataclass(frozen=True)
class _Failed:
    """The producer's error, delivered after the responses queued before it."""

    exc: BaseException


_DONE = object()


async def bounded_responses(app: App, context: Any,
                            responses: AsyncGenerator[Any, None]) -> AsyncIterator[Any]:
    """A streaming call's responses, made by a producer task (it reads the requests and runs
    the model) and sent from a queue of at most `send_queue`: the gRPC twin of the WebSocket
    `client_too_slow`. A client that does not read stalls the sending, not the producer, so
    its responses pile up; past the bound its stream is closed at once (the slot is free),
    the backlog is dropped and the call ends, after what is already in flight, with
    RESOURCE_EXHAUSTED. The producer's own error ends the call after the responses queued
    before it (owed finals first), mapped by abort_for."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    limit = app.cfg.send_queue

    async def pump() -> None:
        try:
            async for r in responses:
                if queue.qsize() >= limit:
                    raise control_error("client_too_slow", f"client_too_slow: more than {limit} "
                                                           "responses waiting: the client is not "
                                                           "reading (send_queue)")
                queue.put_nowait(r)
        except Exception as exc:  # noqa: BLE001 - reported to the client by the consumer
            if getattr(exc, "code", None) == "client_too_slow":
                await responses.aclose()  # closes the stream now; its backlog is not computed
                app.metrics.errors.labels("client_too_slow").inc()
                log.info("gRPC stream error=client_too_slow %s", exc)
                while not queue.empty():  # drop the backlog
                    queue.get_nowait()
            queue.put_nowait(_Failed(exc))
            return
        queue.put_nowait(_DONE)

    task = asyncio.ensure_future(pump())
    try:
        while (item := await queue.get()) is not _DONE:
            if isinstance(item, _Failed):
                await abort_for(context, item.exc)
            yield item
    finally:  # the call ended or was cancelled: the producer stops and closes its stream
        discard(task)


async def abort_for(context: Any, exc: BaseException) -> None:
    """End the call with the status of the error's code (STATUS; a clear message, the resume
    reason and the retry hint in trailing metadata). Anything outside the protocol's
    vocabulary is a server bug: INTERNAL, logged with its traceback."""
    if isinstance(exc, RelayedStatus):
        if exc.trailing:
            context.set_trailing_metadata(exc.trailing)
        await context.abort(exc.status, exc.details)
    if isinstance(exc, CallFailed):
        code, message, reason = exc.failed.code, exc.failed.message, exc.failed.reason
    else:
        code, message, reason = classify(exc, started=False)
        if is_server_bug(exc):
            log.error("gRPC call failed", exc_info=exc)
    status = STATUS.get(code, grpc.StatusCode.INVALID_ARGUMENT)
    if code in ("resume_failed", "resumed_elsewhere"):  # the code, which no status names
        message = f"{code}: {message}"
    if code == "resume_failed":  # the reason also in trailing metadata, for programs
        context.set_trailing_metadata((("resume-failed", reason or ""),))
    elif code == "overloaded":
        context.set_trailing_metadata((("retry-after-ms", "1000"),))
        message = f"{message} (retry after 1 s)"
    await context.abort(status, message)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """API keys in metadata: `authorization: Bearer KEY` or `x-api-key: KEY`."""

    def __init__(self, keys: tuple[str, ...]):
        self.keys = tuple(keys)

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                details: Any) -> Any:
        if not self.keys or details.method.startswith(OPEN_METHODS):
            return await continuation(details)
        meta = {k.lower(): v for k, v in (details.invocation_metadata or ())}
        token = meta.get("x-api-key", "")
        auth = meta.get("authorization", "")
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        if api_key_ok(token, self.keys):
            return await continuation(details)

        async def deny(request: Any, context: Any) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "missing or invalid API key (metadata authorization: Bearer KEY "
                                "or x-api-key: KEY)")

        handler = await continuation(details)
        if handler is None:
            return None
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(deny)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(deny)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(deny)
        return grpc.unary_unary_rpc_method_handler(deny)
