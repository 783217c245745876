"""The server's shared core: one bundle, one backend, one dispatcher; streams for any protocol.

`App` owns what every protocol adapter shares (model, Batch Dispatch, the feature bank, metrics,
admission control, drain, the streams that can be resumed). `App.open(config)` gives a `Stream`:
the async driver around a sans-I/O `Session` whose model steps go through the dispatcher.
Adapters (WebSocket, gRPC) only translate messages to `Stream.feed / finish / close` and events
back.

Resume (server/resume.py has the bookkeeping): when a resumable stream's connection drops, its
adapter calls `App.detach(stream)` instead of `close`: the stream keeps its slot, session,
decoder and model state for `resume_window_s`, finishes computing the audio it had received
(its finals are kept for the client), and is closed when the window passes. `App.resume(token,
offset, finals, owner)` hands it to a new connection with the finals owed; a resume for a
stream whose old connection the server has not yet seen drop takes it over (the old owner is
told through its `owner` event and lets go).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from models.backends.base import BackendConfig
from server.audio_in import BYTES_PER_SAMPLE
from server.dispatch import DispatchConfig, Dispatcher, Overloaded, StreamError
from server.metrics import Metrics
from server.resume import ResumeError, ResumeLedger, Tokens, new_token
from server.session import EndpointConfig, Event, Final, Limits, Session, SessionConfig, SessionError
from server.workers import Slots, http_get_unix

log = logging.getLogger("chorus.stream")
TAKEOVER_S = 5.0  # a resume waits this long for the stream's old connection to let go


@dataclass(frozen=True)
class ServerConfig:
    bundle: str | None = None  # None: the shipped default bundle
    host: str = "127.0.0.1"
    ws_port: int = 8000
    grpc_port: int = 50051
    # OpenAI-compatible HTTP (server/openai_http.py: POST /v1/audio/transcriptions, GET
    # /v1/models); 0: off. Uploads up to max_upload_bytes (OpenAI's limit: 25 MB)
    http_port: int = 0
    max_upload_bytes: int = 25 * 1024 * 1024
    vosk_port: int = 0  # the Vosk-compatible WebSocket (server/vosk.py; Vosk uses 2700); 0: off
    backend: str = "torch"
    device: str = "cpu"  # cpu | cuda (torch, onnxruntime's CUDA provider, TensorRT)
    # onnxruntime's execution provider: None follows `device` (CPU / CUDA); "tensorrt": the
    # TensorRT provider (engines cached in the bundle's trt_cache/), which needs device cuda
    ort_provider: str | None = None
    # torch on CPU: the model's GRU / LSTM / Linear layers in dynamic int8 (models/quantize.py):
    # about twice the streams per core, outputs close to fp32's but not bit-equal
    int8: bool = False
    threads: int = 1
    policy: str = "eager"
    max_wait_ms: float = 10.0  # policy "timeout": how long a batch waits for more chunks
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
    # resume after reconnect (WebSocket, native gRPC): a stream whose connection drops is kept,
    # slot included, this long for its client to come back with the resume token; 0: off
    resume_window_s: float = 30.0
    # serving processes sharing the ports (server/workers.py; SO_REUSEPORT): 0 = one per core
    # (one with device cuda or an ephemeral port)
    workers: int = 0
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


def backend_config(cfg: ServerConfig) -> BackendConfig:
    """The backend settings a server config asks for; ValueError naming the field when they do
    not fit together (a missing GPU or library is the backend's BackendUnavailable)."""
    if cfg.device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {cfg.device!r}")
    provider = cfg.ort_provider
    if provider not in (None, "cpu", "cuda", "tensorrt"):
        raise ValueError(f"ort_provider must be 'cpu', 'cuda' or 'tensorrt', got {provider!r}")
    if provider is not None and cfg.backend != "onnxruntime":
        raise ValueError(f"ort_provider applies to backend onnxruntime only (backend is "
                         f"{cfg.backend!r})")
    if provider == "cpu" and cfg.device != "cpu" or provider in ("cuda", "tensorrt") and \
            cfg.device != "cuda":
        raise ValueError(f"ort_provider {provider!r} needs device "
                         f"{'cpu' if provider == 'cpu' else 'cuda'} (device is {cfg.device!r})")
    if cfg.int8 and (cfg.backend != "torch" or cfg.device != "cpu"):
        raise ValueError(f"int8 needs backend 'torch' and device 'cpu' (backend is "
                         f"{cfg.backend!r}, device {cfg.device!r})")
    return BackendConfig(device=cfg.device, threads=cfg.threads,  # type: ignore[arg-type]
                         max_batch=cfg.max_batch, ort_tensorrt=provider == "tensorrt",
                         int8=cfg.int8)


class Stream:
    """One recognition stream: Session + dispatcher, driven by an adapter.

    The work is cancellation-safe, so that a connection that drops midway (its adapter task
    cancelled) loses nothing a resume could want: model inputs wait in `_inputs` until their
    outputs reach the session, the dispatcher step in flight is shielded (the next `_advance`
    picks up its result), and events are collected in `_events` until the adapter takes them
    (the finals are also kept by the ledger until the client has them)."""

    def __init__(self, app: App, session: Session, sid: int, ledger: ResumeLedger):
        self.app = app
        self.session = session
        self.sid = sid
        self.ledger = ledger
        self.closed = False
        self.detached = False
        self.owner: asyncio.Event | None = None  # set it to make the owning adapter let go
        self.released = asyncio.Event()  # set when the owner lets go (detach or close)
        self.failure: BaseException | None = None  # a step that failed while detached
        self._inputs: deque[Any] = deque()  # accepted model inputs not yet through the session
        self._step: asyncio.Future[Any] | None = None  # the dispatcher step of _inputs[0]
        self._submitted = 0.0  # perf_counter when that step was submitted
        self._events: list[Event] = []
        self._settle: asyncio.Future[None] | None = None  # detached: computing what it has
        self._expiry: asyncio.TimerHandle | None = None

    @property
    def token(self) -> str | None:
        return self.ledger.token

    @property
    def acked(self) -> int:
        """Audio bytes taken into the stream: sent with every result (a client resends from it)."""
        return self.ledger.acked

    async def _advance(self) -> None:
        """Step the accepted inputs in order, each through the dispatcher then the session."""
        while self._inputs:
            if self._step is None:  # decoded in the dispatcher's worker, batched
                self._submitted = time.perf_counter()
                self._step = asyncio.ensure_future(self.app.dispatcher.step(
                    self.sid, self._inputs[0], decoder=self.session.decoder))
            try:
                out = await asyncio.shield(self._step)  # cancelled: the step goes on
            except asyncio.CancelledError:
                raise
            except BaseException:
                self._step = None  # failed: the input stays, for owed_finals to retry
                raise
            self._step = None
            self._inputs.popleft()
            self._record(self.session.on_output(out, decoded=True), self._submitted)

    def _record(self, events: list[Event], since: float) -> None:
        """Events made just now by work that began at `since` (perf_counter): each gets its
        processing_latency_ms (for a chunk's events: its dispatch queue wait + model step +
        decoding)."""
        if events:
            ms = round(1000 * (time.perf_counter() - since), 3)
            events = [replace(e, processing_latency_ms=ms) for e in events]
        self.app.metrics.observe_events(events)
        for e in events:
            if isinstance(e, Final):
                self.ledger.made(e)
        self._events += events

    def _take(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    async def feed(self, data: bytes) -> list[Event]:
        """Audio bytes -> events (SessionError / AudioError on bad input; nothing lost then).
        Bytes a resumed client re-sends that the stream already has are skipped first."""
        data = self.ledger.incoming(data)
        if data:
            before = self.session.audio_seconds
            self._inputs.extend(self.session.feed(data, time.monotonic()))
            self.ledger.took(len(data))
            self.app.metrics.audio_seconds.inc(self.session.audio_seconds - before)
        await self._advance()
        return self._take()

    async def finish(self) -> list[Event]:
        """End of audio: the owed finals (again callable after a resume: then only what is new)."""
        t0 = time.perf_counter()
        self._inputs.extend(self.session.finish(time.monotonic()))
        await self._advance()
        self._close_session(t0)
        return self._take()

    def _close_session(self, t0: float) -> None:
        """A finished stream's last final, once its inputs are through (a no-op before or
        after); timed from the submission of its last chunk when that came after `t0` (the
        tail the end of audio flushed), else from `t0`."""
        if self.session.finished and not self.session.closed:
            self._record(self.session.close(), max(t0, self._submitted))

    async def owed_finals(self) -> list[Final]:
        """After an error: the finals for the audio already accepted (never raises)."""
        if self.session.closed:
            return [e for e in self._take() if isinstance(e, Final)]
        try:
            return [e for e in await self.finish() if isinstance(e, Final)]
        except Exception:  # noqa: BLE001 - the error being reported matters more
            log.warning("stream=%d could not finish after an error", self.sid, exc_info=True)
            return []

    async def _settle_detached(self) -> None:
        """Detached: compute the audio already received (a stopped stream: to its end), so
        the finals it makes wait for the client; partials are for nobody."""
        try:
            t0 = time.perf_counter()
            await self._advance()
            self._close_session(t0)
        except Exception as exc:  # noqa: BLE001 - reported to a resuming client
            self.failure = exc
            log.warning("stream=%d failed while detached: %s", self.sid, exc)
        self._events = [e for e in self._events if isinstance(e, Final)]

    def close(self, why: str = "ended") -> None:
        """End the stream and free its slot (`why`: the reason a late resume will be told)."""
        if self.closed:
            return
        self.closed = True
        if self.app.slots is not None:
            if self.detached:
                self.app.slots.detached(-1)
            self.app.slots.give()
        self.detached = False
        if self._expiry is not None:
            self._expiry.cancel()
        for fut in (self._step, self._settle):
            if fut is not None and not fut.done():
                discard(fut)
        self.app.dispatcher.close_stream(self.sid)
        self.app.metrics.active_streams.set(self.app.dispatcher.active_streams)
        if self.token is not None:
            self.app.tokens.remove(self.token, why)
        self.released.set()
        log.info("stream=%d closed audio_s=%.2f", self.sid, self.session.audio_seconds)


class App:
    def __init__(self, cfg: ServerConfig, bundle: Any | None = None, *, worker: Any = None,
                 shared: Any = None):
        """`worker` (server.workers.Worker) and `shared` (its Slots array): this App is one of
        several processes serving the same ports."""
        from models.backends import make_backend
        from models.bundle import load
        from models.features import Fbank

        if cfg.decoder not in (None, "greedy", "beam"):
            raise ValueError(f"decoder must be 'greedy' or 'beam', got {cfg.decoder!r}")
        if not cfg.resume_window_s >= 0:
            raise ValueError(f"resume_window_s must be >= 0 seconds (0: no resume), got "
                             f"{cfg.resume_window_s!r}")
        self.cfg = cfg
        self.worker = worker
        self.slots: Slots | None = None
        if worker is not None:
            self.slots = Slots(shared, worker, cfg.max_streams)
        self.bundle = bundle or load(cfg.bundle)
        if cfg.endpoint.vad:  # fail at start-up, not on the first stream
            from models.vad import StreamingVad, check_rate

            check_rate(self.bundle.features.sample_rate)
            StreamingVad()  # the package and its weights load
        self.backend = make_backend(cfg.backend, self.bundle, backend_config(cfg))
        # every stream's decoding runs in the dispatcher's worker after the model step,
        # batched by kind (greedy argmax / joiner for all; beams frame by frame together, one
        # neural-LM call per frame for all of them): the event loop keeps protocol I/O only
        from models.decoding.batch import advance_all as post
        self.fbank = Fbank(self.bundle.features)  # shared by every session
        self.dispatcher = Dispatcher(self.backend, DispatchConfig(
            policy=cfg.policy,  # type: ignore[arg-type]  # checked by DispatchConfig
            max_batch=cfg.max_batch, max_streams=cfg.max_streams, max_wait_ms=cfg.max_wait_ms),
            post=post, featurize=self._featurize)
        self.metrics = Metrics(self.dispatcher)
        self.tokens: Tokens[Stream] = Tokens()  # resumable streams, attached or detached
        self.draining = False
        self.drain_event = asyncio.Event()  # set on drain: open streams finish and close
        self.started = False

    def _featurize(self, chunks: list[Any]) -> list[np.ndarray]:
        """The dispatcher's hook: many streams' chunks (dispatch.Frames: samples) -> their
        log-mel features (rows, F), framed and transformed in one call for all of them."""
        import torch

        fb = self.fbank
        with torch.no_grad():
            frames = [fb.frame(torch.from_numpy(c.samples)) for c in chunks]  # (rows, W) each
            feats = fb.features(torch.cat(frames)).numpy()
        return np.split(feats, np.cumsum([len(f) for f in frames])[:-1])

    @property
    def ready(self) -> bool:
        task = self.dispatcher._task
        return self.started and not self.draining and task is not None and not task.done()

    async def start(self) -> None:
        await self.dispatcher.start()
        self.metrics.runtime.loop = asyncio.get_running_loop()  # chorus_asyncio_tasks
        self.started = True

    async def stop(self) -> None:
        await self.dispatcher.stop()

    def session_config(self, **overrides: Any) -> SessionConfig:
        base = SessionConfig(limits=self.cfg.limits, endpoint=self.cfg.endpoint,
                             decoder=self.cfg.decoder)
        if overrides.get("decoder") is None:  # the client did not choose: the server's default
            overrides.pop("decoder", None)
        return SessionConfig(**{**base.__dict__, **overrides})

    @property
    def detached_streams(self) -> int:
        return sum(1 for s in self.tokens.live.values() if s.detached)

    @property
    def attached_streams(self) -> int:
        """Streams open with a connection, over every worker (detached ones hold a slot for
        their resume, which needs no new one): what a new connection's admission checks."""
        if self.slots is not None:
            return self.slots.attached
        return self.dispatcher.active_streams - self.detached_streams

    async def metrics_text(self) -> bytes:
        """/metrics: this process's, or with workers every worker's, summed (per-process
        figures labelled by worker); a sibling that does not answer is left out (logged)."""
        if self.worker is None:
            return self.metrics.render()
        from server.metrics import merge_exposition

        async def one(i: int) -> bytes:
            if i == self.worker.index:
                return self.metrics.render()
            return await http_get_unix(self.worker.ws_socket(i), "/metrics")

        got = await asyncio.gather(*(one(i) for i in range(self.worker.count)),
                                   return_exceptions=True)
        texts = {}
        for i, body in enumerate(got):
            if isinstance(body, BaseException):
                log.warning("metrics of worker %d not read: %s", i, body)
            else:
                texts[i] = body.decode()
        return merge_exposition(texts)

    def open(self, config: SessionConfig, *, resumable: bool = False,
             owner: asyncio.Event | None = None) -> Stream:
        """A new stream; Overloaded when at capacity, SessionError server_shutdown when
        draining, AudioError on a bad config. `resumable` (and resume_window_s > 0): it gets a
        resume token; `owner`: the event the owning adapter watches, set when another
        connection resumes the stream."""
        if self.draining:
            raise SessionError("server_shutdown", "the server is shutting down: start the "
                                                  "stream on another instance")
        session = Session(self.bundle, config, fbank=self.fbank,  # validates first
                          deferred_features=True)
        if self.slots is not None and not self.slots.take():
            self.dispatcher.metrics.refused += 1
            raise Overloaded(f"server at capacity: {self.slots.open} streams open over "
                             f"{self.worker.count} workers (max_streams={self.cfg.max_streams}); "
                             "retry later")
        try:
            sid = self.dispatcher.open_stream()
        except Overloaded:
            if self.slots is not None:
                self.slots.give()
            raise
        fmt = config.format
        align = 1 if fmt.encoding == "wav" else BYTES_PER_SAMPLE[fmt.encoding] * fmt.channels
        token = None
        if resumable and self.cfg.resume_window_s > 0:  # a worker's tokens name the worker
            token = (self.worker.prefix if self.worker is not None else "") + new_token()
        stream = Stream(self, session, sid, ResumeLedger(token, align=align))
        if token is not None:
            stream.owner = owner
            self.tokens.add(token, stream)
        log.info("stream=%d opened encoding=%s rate=%s continuous=%s resumable=%s", sid,
                 fmt.encoding, fmt.sample_rate, config.continuous, token is not None)
        self.metrics.streams_total.inc()
        self.metrics.active_streams.set(self.dispatcher.active_streams)
        return stream

    def detach(self, stream: Stream) -> None:
        """The stream's connection dropped before the stream ended: keep it, slot and all, for
        resume_window_s (computing the audio it has), then close it. A stream that cannot be
        resumed (no token, resume off, the server draining) is closed at once."""
        if stream.closed or stream.detached:
            return
        if stream.token is None or self.draining:
            stream.close("server_shutdown" if self.draining else "ended")
            return
        stream.detached, stream.owner = True, None
        if self.slots is not None:
            self.slots.detached(+1)
        if stream._settle is None or stream._settle.done():  # one task advances a stream: a
            # resume dropped while it waited for the settle leaves that settle running
            stream._settle = asyncio.ensure_future(stream._settle_detached())
        stream._expiry = asyncio.get_running_loop().call_later(
            self.cfg.resume_window_s, self._expire, stream)
        self.metrics.resumes.labels("detached").inc()
        log.info("stream=%d detached: resumable for %gs (acked=%d finals=%d)", stream.sid,
                 self.cfg.resume_window_s, stream.acked, stream.ledger.finals_made)
        stream.released.set()

    def _expire(self, stream: Stream) -> None:
        if stream.detached and not stream.closed:
            self.metrics.resumes.labels("expired").inc()
            log.info("stream=%d resume window expired: closed", stream.sid)
            stream.close("expired")

    async def resume(self, token: Any, offset: int, finals: int,
                     owner: asyncio.Event) -> tuple[Stream, list[Final]]:
        """Continue the stream of `token` on a new connection (whose adapter watches `owner`):
        the stream and the finals owed to the client (seq >= finals). ResumeError when it
        cannot (the stream stays detached, its window running, when the token was right)."""
        window = self.cfg.resume_window_s
        try:
            if window <= 0:
                raise ResumeError("disabled", "resume is off on this server (resume_window_s=0): "
                                              "start a new stream")
            if self.draining:
                raise ResumeError("server_shutdown", "the server is shutting down: start a new "
                                                     "stream on another instance")
            stream = self.tokens.find(token, window_s=window)
            if not stream.detached:  # the old connection is still attached: take it over
                if stream.owner is not None:
                    stream.owner.set()
                try:
                    await asyncio.wait_for(stream.released.wait(), TAKEOVER_S)
                except TimeoutError:
                    raise ResumeError("in_use", f"the stream's current connection did not let "
                                                f"go within {TAKEOVER_S:g} s") from None
                if stream.closed or not stream.detached:
                    raise ResumeError("ended", "the stream ended before it could be resumed")
            stream.ledger.check(offset, finals)
        except ResumeError:
            self.metrics.resumes.labels("failed").inc()
            raise
        # take it: this connection owns it now (a later resume will take it from this one)
        if stream._expiry is not None:
            stream._expiry.cancel()
        stream.detached, stream.owner = False, owner
        if self.slots is not None:
            self.slots.detached(-1)
        stream.released.clear()
        try:
            if stream._settle is not None:
                await asyncio.shield(stream._settle)  # what it computed while detached
            if stream.failure is not None:
                failure = stream.failure
                stream.close()
                raise StreamError(f"the stream failed while detached: {failure}")
            owed = stream.ledger.resume(offset, finals)  # again: finals made while detached
        except BaseException:  # this connection dropped too, or finals_gone: detached again
            self.detach(stream)
            raise
        stream._events.clear()  # the owed finals are all that is due
        self.metrics.resumes.labels("resumed").inc()
        log.info("stream=%d resumed at offset=%d (acked=%d) finals=%d owed=%d", stream.sid,
                 offset, stream.acked, finals, len(owed))
        return stream, owed

    async def drain(self) -> None:
        """Stop accepting streams; open ones deliver their owed finals and close (bounded);
        detached ones (nobody to deliver to) close at once."""
        self.draining = True
        self.drain_event.set()
        for stream in list(self.tokens.live.values()):
            if stream.detached:
                stream.close("server_shutdown")
        deadline = time.monotonic() + self.cfg.drain_timeout_s
        while self.dispatcher.active_streams and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


def final_dict(e: Final) -> dict[str, Any]:
    return {"type": "final", "text": e.text, "confidence": e.confidence, "start": e.start,
            "end": e.end, "audio_processed": e.audio_processed, "seq": e.seq,
            "processing_latency_ms": e.processing_latency_ms,
            "words": [w.__dict__ for w in e.words],
            "alternatives": [{"text": t, "score": s} for t, s in e.alternatives]}
