"""The server's shared core: one bundle, one backend, one dispatcher; streams for any protocol.

`App` owns what every protocol adapter shares (model, Batch Dispatch, the feature bank, metrics,
admission control, drain). `App.open(config)` gives a `Stream`: the async driver around a
sans-I/O `Session` whose model steps go through the dispatcher. Adapters (WebSocket, gRPC)
only translate messages to `Stream.feed / finish / close` and events back.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from server.dispatch import DispatchConfig, Dispatcher, Overloaded
from server.metrics import Metrics
from server.session import EndpointConfig, Event, Final, Limits, Session, SessionConfig

log = logging.getLogger("chorus.stream")


@dataclass(frozen=True)
class ServerConfig:
    bundle: str | None = None  # None: the shipped default bundle
    host: str = "127.0.0.1"
    ws_port: int = 8000
    grpc_port: int = 50051
    backend: str = "torch"
    threads: int = 1
    policy: str = "eager"
    decoder: str | None = None  # streams' default decoder (greedy | beam); None: the bundle's
    max_batch: int = 64
    max_streams: int = 64
    api_keys: tuple[str, ...] = ()  # empty: no authentication
    tls_cert: str | None = None
    tls_key: str | None = None
    send_queue: int = 256  # WebSocket and gRPC: results waiting for a slow reader before it is dropped
    # WebSocket: kernel send buffer per connection (bytes). Bounded so that a client that stops
    # reading is noticed by the send queue above, not hidden in up to 4 MB of autotuned buffer.
    ws_send_buffer: int = 262144
    drain_timeout_s: float = 30.0
    limits: Limits = field(default_factory=Limits)
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)


def discard(fut: asyncio.Future[Any]) -> None:
    """Cancel a helper future nobody will await any more, and take whatever it ends with (an
    exception included), so asyncio never logs "Task exception was never retrieved"."""
    fut.cancel()
    fut.add_done_callback(lambda f: f.cancelled() or f.exception())


def api_key_ok(token: str, keys: tuple[str, ...]) -> bool:
    """Whether `token` is one of the keys, compared in constant time against every key (a
    timing side channel must not reveal how much of a key a guess got right)."""
    given = token.encode("utf-8", "surrogatepass")
    hits = [hmac.compare_digest(given, k.encode("utf-8", "surrogatepass")) for k in keys]
    return bool(token) and any(hits)


class Stream:
    """One recognition stream: Session + dispatcher, driven by an adapter."""

    def __init__(self, app: App, session: Session, sid: int):
        self.app = app
        self.session = session
        self.sid = sid
        self.closed = False

    async def _run(self, inputs: list[Any]) -> list[Event]:
        events: list[Event] = []
        for x in inputs:
            dec = self.session.batch_decoder  # decoded in the dispatcher, batched, if set
            out = await self.app.dispatcher.step(self.sid, x, decoder=dec)
            events += self.session.on_output(out, decoded=dec is not None)
        self.app.metrics.observe_events(events)
        return events

    async def feed(self, data: bytes) -> list[Event]:
        """Audio bytes -> events (SessionError / AudioError on bad input; nothing lost then)."""
        before = self.session.audio_seconds
        inputs = self.session.feed(data, time.monotonic())
        self.app.metrics.audio_seconds.inc(self.session.audio_seconds - before)
        return await self._run(inputs)

    async def finish(self) -> list[Event]:
        """End of audio: the owed finals."""
        events = await self._run(self.session.finish(time.monotonic()))
        tail = self.session.close()
        self.app.metrics.observe_events(tail)
        return events + tail

    async def owed_finals(self) -> list[Final]:
        """After an error: the finals for the audio already accepted (never raises)."""
        if self.session.closed:
            return []
        try:
            return [e for e in await self.finish() if isinstance(e, Final)]
        except Exception:  # noqa: BLE001 - the error being reported matters more
            log.warning("stream=%d could not finish after an error", self.sid, exc_info=True)
            return []

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.app.dispatcher.close_stream(self.sid)
            self.app.metrics.active_streams.set(self.app.dispatcher.active_streams)
            log.info("stream=%d closed audio_s=%.2f", self.sid, self.session.audio_seconds)


class App:
    def __init__(self, cfg: ServerConfig, bundle: Any | None = None):
        from models.backends import BackendConfig, make_backend
        from models.bundle import load
        from models.features import Fbank

        if cfg.decoder not in (None, "greedy", "beam"):
            raise ValueError(f"decoder must be 'greedy' or 'beam', got {cfg.decoder!r}")
        self.cfg = cfg
        self.bundle = bundle or load(cfg.bundle)
        self.backend = make_backend(cfg.backend, self.bundle, BackendConfig(threads=cfg.threads))
        post = None
        if self.bundle.model.output_kind == "encoder":  # RNN-T: greedy decoding batched too
            import torch

            from models.decoding.rnnt import greedy_batch

            def post(decoders: list[Any], outputs: list[Any]) -> None:
                greedy_batch(decoders, [torch.from_numpy(o) for o in outputs])
        self.dispatcher = Dispatcher(self.backend, DispatchConfig(
            policy=cfg.policy, max_batch=cfg.max_batch, max_streams=cfg.max_streams),  # type: ignore[arg-type]
            post=post)
        self.fbank = Fbank(self.bundle.features)  # shared by every session
        self.metrics = Metrics(self.dispatcher)
        self.draining = False
        self.drain_event = asyncio.Event()  # set on drain: open streams finish and close
        self.started = False

    @property
    def ready(self) -> bool:
        task = self.dispatcher._task
        return self.started and not self.draining and task is not None and not task.done()

    async def start(self) -> None:
        await self.dispatcher.start()
        self.started = True

    async def stop(self) -> None:
        await self.dispatcher.stop()

    def session_config(self, **overrides: Any) -> SessionConfig:
        base = SessionConfig(limits=self.cfg.limits, endpoint=self.cfg.endpoint,
                             decoder=self.cfg.decoder)
        if overrides.get("decoder") is None:  # the client did not choose: the server's default
            overrides.pop("decoder", None)
        return SessionConfig(**{**base.__dict__, **overrides})

    def open(self, config: SessionConfig) -> Stream:
        """A new stream; Overloaded when at capacity or draining, AudioError on a bad config."""
        if self.draining:
            raise Overloaded("server is shutting down; retry on another instance")
        session = Session(self.bundle, config, fbank=self.fbank)  # validates first
        sid = self.dispatcher.open_stream()
        log.info("stream=%d opened encoding=%s rate=%s continuous=%s", sid, config.format.encoding,
                 config.format.sample_rate, config.continuous)
        self.metrics.streams_total.inc()
        self.metrics.active_streams.set(self.dispatcher.active_streams)
        return Stream(self, session, sid)

    async def drain(self) -> None:
        """Stop accepting streams; open ones deliver their owed finals and close (bounded)."""
        self.draining = True
        self.drain_event.set()
        deadline = time.monotonic() + self.cfg.drain_timeout_s
        while self.dispatcher.active_streams and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


def final_dict(e: Final) -> dict[str, Any]:
    return {"type": "final", "text": e.text, "confidence": e.confidence, "start": e.start,
            "end": e.end, "audio_processed": e.audio_processed,
            "words": [w.__dict__ for w in e.words],
            "alternatives": [{"text": t, "score": s} for t, s in e.alternatives]}
