"""What both gRPC services share: the requests of a streaming call (drain, idle timeout, a
resume elsewhere), its bounded responses (slow readers), error mapping, auth, whole-audio
recognition is server/whole.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from models.audio import AudioError
from server.app import App, api_key_ok, discard
from server.dispatch import Overloaded, StreamError
from server.resume import ResumedElsewhere, ResumeError
from server.session import SessionError

log = logging.getLogger("chorus.grpc")
OPEN_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")  # no API key needed


class ShuttingDown(Exception):
    """The server is draining: the stream ends after its owed finals."""


class IdleTimeout(Exception):
    """The client sent nothing for limits.idle_timeout_s: the stream ends after its owed
    finals (DEADLINE_EXCEEDED), so a silent client does not hold a slot forever."""


async def client_requests(app: App, requests: AsyncIterator[Any],
                          preempt: asyncio.Event | None = None) -> AsyncIterator[Any]:
    """The client's requests until it half-closes; ShuttingDown when the server starts
    draining and IdleTimeout after limits.idle_timeout_s with no request (the WebSocket
    `idle_timeout`): a client that sends nothing more must hold neither a slot nor the drain.
    ResumedElsewhere when `preempt` is set (another call resumed this call's stream)."""
    it = aiter(requests)
    idle_s = app.cfg.limits.idle_timeout_s
    drain = asyncio.ensure_future(app.drain_event.wait())
    pre = asyncio.ensure_future((preempt or asyncio.Event()).wait())
    nxt: asyncio.Future[Any] | None = None
    try:
        while True:
            nxt = asyncio.ensure_future(anext(it))
            done, _ = await asyncio.wait({nxt, drain, pre}, timeout=idle_s,
                                         return_when=asyncio.FIRST_COMPLETED)
            # a half-close that came before the resume still counts; an unread request is
            # not taken (the resuming client resends it)
            ended = nxt in done and (nxt.cancelled() or nxt.exception() is not None)
            if pre in done and not ended:
                raise ResumedElsewhere("resumed_elsewhere: another call resumed this stream "
                                       "with its token")
            if drain in done and nxt not in done:
                raise ShuttingDown("the server is shutting down: finals for the audio received "
                                   "were sent; reconnect elsewhere")
            if nxt not in done:
                raise IdleTimeout(f"no request for {idle_s:g} seconds (limits.idle_timeout_s): "
                                  "finals for the audio received were sent")
            try:
                yield nxt.result()
            except StopAsyncIteration:
                return
    finally:  # also when the call is cancelled: the pending read must not leak its exception
        discard(drain)
        discard(pre)
        if nxt is not None:
            discard(nxt)


class ClientTooSlow(Exception):
    """More than `send_queue` responses wait for a client that does not read."""


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
                    raise ClientTooSlow(f"client_too_slow: more than {limit} responses waiting: "
                                        "the client is not reading (send_queue)")
                queue.put_nowait(r)
        except ClientTooSlow as exc:
            await responses.aclose()  # closes the stream now; its backlog is not computed
            app.metrics.errors.labels("client_too_slow").inc()
            log.info("gRPC stream error=client_too_slow %s", exc)
            while not queue.empty():  # drop the backlog
                queue.get_nowait()
            queue.put_nowait(_Failed(exc))
            return
        except Exception as exc:  # noqa: BLE001 - reported to the client by the consumer
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
    """Map our errors to gRPC status codes (clear message; retry hint when at capacity).
    Only the client errors (AudioError, SessionError) are INVALID_ARGUMENT; anything else
    unexpected is a server bug: INTERNAL, logged with its traceback."""
    if isinstance(exc, ShuttingDown):
        await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
    if isinstance(exc, IdleTimeout):
        await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc))
    if isinstance(exc, AudioError | SessionError):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, ResumeError):  # the reason also in trailing metadata, for programs
        context.set_trailing_metadata((("resume-failed", exc.reason),))
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"resume_failed: {exc}")
    if isinstance(exc, ResumedElsewhere):
        await context.abort(grpc.StatusCode.ABORTED, str(exc))
    if isinstance(exc, ClientTooSlow):
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
    if isinstance(exc, Overloaded):
        context.set_trailing_metadata((("retry-after-ms", "1000"),))
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{exc} (retry after 1 s)")
    if isinstance(exc, StreamError):
        await context.abort(grpc.StatusCode.INTERNAL, str(exc))
    log.error("gRPC call failed", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")


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
