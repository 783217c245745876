"""What both gRPC services share: error mapping, auth, whole-audio recognition over a Stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from models.audio import AudioError
from server.app import App
from server.audio_in import BYTES_PER_SAMPLE, AudioFormat
from server.dispatch import Overloaded, StreamError
from server.session import Event, Final, SessionConfig, SessionError

OPEN_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")  # no API key needed


class ShuttingDown(Exception):
    """The server is draining: the stream ends after its owed finals."""


async def until_drained(app: App, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """The client's requests, until the server starts draining (then ShuttingDown): a stream
    whose client sends nothing more must not hold the drain up."""
    it = aiter(requests)
    drain = asyncio.ensure_future(app.drain_event.wait())
    try:
        while True:
            nxt = asyncio.ensure_future(anext(it))
            done, _ = await asyncio.wait({nxt, drain}, return_when=asyncio.FIRST_COMPLETED)
            if nxt not in done:
                nxt.cancel()
                raise ShuttingDown("the server is shutting down: finals for the audio received "
                                   "were sent; reconnect elsewhere")
            try:
                yield nxt.result()
            except StopAsyncIteration:
                return
    finally:
        drain.cancel()


async def abort_for(context: Any, exc: BaseException) -> None:
    """Map our errors to gRPC status codes (clear message; retry hint when at capacity)."""
    if isinstance(exc, ShuttingDown):
        await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
    if isinstance(exc, AudioError | SessionError | ValueError):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, Overloaded):
        context.set_trailing_metadata((("retry-after-ms", "1000"),))
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{exc} (retry after 1 s)")
    if isinstance(exc, StreamError):
        await context.abort(grpc.StatusCode.INTERNAL, str(exc))
    raise exc


def frames_of(data: bytes, fmt: AudioFormat, max_bytes: int) -> list[bytes]:
    """Cut a whole audio into frames under the frame limit, on sample boundaries when raw."""
    width = 1 if fmt.encoding == "wav" else BYTES_PER_SAMPLE[fmt.encoding] * fmt.channels
    size = max(width, (max_bytes // width) * width)
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


async def recognize_whole(app: App, config: SessionConfig, audio: bytes) -> list[Final]:
    """One whole audio through the streaming path: the finals (one per utterance)."""
    stream = app.open(config)
    try:
        events: list[Event] = []
        for frame in frames_of(audio, config.format, app.cfg.limits.max_frame_bytes):
            events += await stream.feed(frame)
        events += await stream.finish()
        return [e for e in events if isinstance(e, Final)]
    finally:
        stream.close()


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """API keys in metadata: `authorization: Bearer KEY` or `x-api-key: KEY`."""

    def __init__(self, keys: tuple[str, ...]):
        self.keys = set(keys)

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                details: Any) -> Any:
        if not self.keys or details.method.startswith(OPEN_METHODS):
            return await continuation(details)
        meta = {k.lower(): v for k, v in (details.invocation_metadata or ())}
        token = meta.get("x-api-key", "")
        auth = meta.get("authorization", "")
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        if token in self.keys:
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
