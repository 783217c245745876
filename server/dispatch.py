"""Batch Dispatch (Deep Speech 2, DESIGN 3.4): many streams' chunks, one forward step.

Hand-written: the scheduling policy *is* the product here (no serving library batches
recurrent state this way). Streams submit one chunk at a time (`await step(sid, features)`);
the dispatcher owns every stream's recurrent state. Its loop:

  eager    whenever the backend is idle, take every ready chunk (up to max_batch) and run them
           as one batch; never wait to fill a batch (requests that arrive while a batch runs
           form the next one, so the batch size follows the load);
  timeout  after the first ready chunk, wait up to max_wait_ms for more (for comparison);
  none     batch size 1.

A batch stacks features (chunks of equal length; unequal ones run as separate groups) and
gathers the streams' states along dim 0, runs `backend.step` in a worker thread (off the event
loop), then scatters outputs and new states back. A failing batch is retried chunk by chunk,
so only the chunks that fail alone fail (each gets a StreamError, its state untouched); the
loop keeps running. A stream closed while its chunk waits (even while an earlier group of the
same batch computes) is skipped before each group: a stream that goes away never fails
another's chunk. Admission control: beyond `max_streams` open streams or `max_queue` waiting
chunks, new work is refused up front (`Overloaded`) instead of slowing everyone down.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Policy = Literal["eager", "timeout", "none"]
POLICIES: tuple[str, ...] = ("eager", "timeout", "none")


class Overloaded(RuntimeError):
    """Capacity reached: refuse the new stream or chunk (HTTP 503 / RESOURCE_EXHAUSTED)."""


class StreamError(RuntimeError):
    """This stream's chunk could not be computed; other streams are unaffected."""


class _PostFailed(RuntimeError):
    """The batched decoding hook failed after the model step: not retried chunk by chunk
    (some decoders may already hold this step's outputs)."""


@dataclass(frozen=True)
class DispatchConfig:
    policy: Policy = "eager"
    max_batch: int = 64
    max_wait_ms: float = 10.0  # timeout policy only
    max_streams: int = 256
    max_queue: int = 1024

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        if self.max_batch < 1 or self.max_streams < 1 or self.max_queue < 1:
            raise ValueError(f"max_batch, max_streams and max_queue must be >= 1: {self}")


@dataclass
class DispatchMetrics:
    batch_sizes: Counter[int] = field(default_factory=Counter)  # batch size -> count
    steps: int = 0
    chunks: int = 0
    failed_chunks: int = 0
    compute_s: float = 0.0
    # per chunk, submit -> batch start: the latest waits (bounded: a server runs for months)
    queue_wait_s: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))
    queue_wait_sum_s: float = 0.0
    compute_s_per_step: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))
    refused: int = 0

    @property
    def mean_batch(self) -> float:
        return self.chunks / self.steps if self.steps else 0.0

    def summary(self) -> dict[str, Any]:
        waits = np.asarray(self.queue_wait_s or [0.0])
        return {"steps": self.steps, "chunks": self.chunks, "mean_batch": round(self.mean_batch, 2),
                "batch_sizes": dict(sorted(self.batch_sizes.items())),
                "compute_s": round(self.compute_s, 3), "failed_chunks": self.failed_chunks,
                "refused": self.refused,
                "queue_wait_ms_p50": round(1000 * float(np.percentile(waits, 50)), 2),
                "queue_wait_ms_p99": round(1000 * float(np.percentile(waits, 99)), 2)}


@dataclass(frozen=True)
class Frames:
    """A chunk as the samples its `rows` (T + lookahead) frames cover, whose features the
    dispatcher computes in its worker thread, for every such chunk of a batch at once (the
    `featurize` hook)."""

    samples: np.ndarray  # (S,)
    rows: int

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.rows,)


@dataclass
class _Request:
    sid: int
    features: np.ndarray | Frames  # (T + lookahead, F), or the samples of those frames
    future: asyncio.Future[np.ndarray]
    submitted: float
    decoder: Any = None  # decoded in the worker thread by `post`, batched with the others


class Dispatcher:
    def __init__(self, backend: Any, config: DispatchConfig | None = None,
                 post: Callable[[list[Any], np.ndarray], None] | None = None,
                 featurize: Callable[[list[Frames]], list[np.ndarray]] | None = None):
        """`post(decoders, outputs (R, T', X))`: runs after each model step in the worker
        thread for the R chunks of the batch that came with a decoder (decoding batched across
        streams: models.decoding.batch.advance_all). `featurize(chunks)` ->
        each chunk's features (rows, F): for the batch's `Frames` chunks, in one call before
        the step in the worker thread (feature extraction batched across streams)."""
        self.backend = backend
        self.post = post
        self.featurize = featurize
        self.cfg = config or DispatchConfig()
        self.metrics = DispatchMetrics()
        self._states: dict[int, dict[str, np.ndarray]] = {}  # sid -> {"state_x": (1, ...)}
        self._busy: set[int] = set()  # streams with a chunk queued or running
        self._ids = itertools.count(1)
        self._queue: asyncio.Queue[_Request] | None = None
        self._task: asyncio.Task[None] | None = None
        # one worker: the backend runs one batch at a time; the event loop stays free
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dispatch")

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="dispatcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._pool.shutdown(wait=True)

    async def __aenter__(self) -> Dispatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- streams -----------------------------------------------------------------------------
    @property
    def active_streams(self) -> int:
        return len(self._states)

    def is_open(self, sid: int) -> bool:
        return sid in self._states

    def open_stream(self) -> int:
        if len(self._states) >= self.cfg.max_streams:
            self.metrics.refused += 1
            raise Overloaded(f"server at capacity: {len(self._states)} streams open "
                             f"(max_streams={self.cfg.max_streams}); retry later")
        sid = next(self._ids)
        self._states[sid] = self.backend.init_state(1)
        return sid

    def close_stream(self, sid: int) -> None:
        self._states.pop(sid, None)

    async def step(self, sid: int, features: np.ndarray | Frames, decoder: Any = None) -> np.ndarray:
        """features (T + lookahead, F) for stream `sid` -> its outputs (T / subsampling, X).
        With `decoder` (and a `post` hook), the outputs come back already decoded into it."""
        if self._queue is None:
            raise RuntimeError("dispatcher not started: use `async with Dispatcher(...)`")
        if sid not in self._states:
            raise StreamError(f"unknown or closed stream {sid}")
        if sid in self._busy:
            raise StreamError(f"stream {sid} already has a chunk in flight; await it first")
        if self._queue.qsize() >= self.cfg.max_queue:
            self.metrics.refused += 1
            raise Overloaded(f"dispatch queue full ({self.cfg.max_queue} chunks waiting)")
        fut: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._busy.add(sid)
        try:
            if isinstance(features, Frames):
                if self.featurize is None:
                    raise StreamError("raw frames sent to a dispatcher without a featurize hook")
                item: np.ndarray | Frames = features
            else:
                item = np.asarray(features, np.float32)
            self._queue.put_nowait(_Request(sid, item, fut, time.perf_counter(), decoder))
            return await fut
        finally:
            self._busy.discard(sid)

    # ---- the loop ----------------------------------------------------------------------------
    async def _collect(self) -> list[_Request]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        cap = 1 if self.cfg.policy == "none" else self.cfg.max_batch
        if self.cfg.policy == "timeout":
            deadline = time.perf_counter() + self.cfg.max_wait_ms / 1000
            while len(batch) < cap:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except TimeoutError:
                    break
        while len(batch) < cap and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            groups: dict[int, list[_Request]] = defaultdict(list)
            for r in await self._collect():
                groups[r.features.shape[0]].append(r)
            for group in groups.values():
                # checked again before every group: a stream may close while an earlier group
                # of the same batch computes, and a gone stream must not fail the others
                live = self._live(group)
                if live:
                    self._record_waits(live)
                    await self._execute(loop, live)

    def _live(self, group: list[_Request]) -> list[_Request]:
        """The requests still wanted: stream open, caller waiting. A caller whose stream was
        closed under it gets a StreamError rather than waiting forever."""
        live = []
        for r in group:
            if r.future.done():  # the caller went away (cancelled)
                continue
            if r.sid not in self._states:
                r.future.set_exception(StreamError(
                    f"stream {r.sid} was closed while its chunk waited"))
                continue
            live.append(r)
        return live

    def _record_waits(self, group: list[_Request]) -> None:
        start = time.perf_counter()
        for r in group:
            self.metrics.queue_wait_s.append(start - r.submitted)
            self.metrics.queue_wait_sum_s += start - r.submitted

    def _features(self, group: list[_Request]) -> np.ndarray:
        """(B, T, F) features of the group: the `Frames` chunks' computed in one call."""
        raw = [i for i, r in enumerate(group) if isinstance(r.features, Frames)]
        feats: list[Any] = [r.features for r in group]
        if raw:
            assert self.featurize is not None
            for i, f in zip(raw, self.featurize([feats[i] for i in raw]), strict=True):
                feats[i] = f
        return np.stack(feats).astype(np.float32, copy=False)

    def _step(self, inputs: dict[str, np.ndarray], group: list[_Request]) -> dict[str, np.ndarray]:
        """In the worker thread: features of raw frames, the model step, then the batched
        decoding hook."""
        inputs = {"features": self._features(group), **inputs}
        out = self.backend.step(inputs)
        if self.post is not None:
            rows = [i for i, r in enumerate(group) if r.decoder is not None]
            if rows:
                try:
                    self.post([group[i].decoder for i in rows], out["outputs"][rows])
                except Exception as exc:  # noqa: BLE001 - decoders may be half advanced
                    raise _PostFailed(f"{type(exc).__name__}: {exc}") from exc
        return out

    def _gather(self, group: list[_Request]) -> dict[str, np.ndarray]:
        """The group's streams' states along dim 0 (features: `_features`, in the worker)."""
        inputs = {}
        for name in self._states[group[0].sid]:
            inputs[name] = np.concatenate([self._states[r.sid][name] for r in group])
        return inputs

    async def _execute(self, loop: asyncio.AbstractEventLoop, group: list[_Request]) -> None:
        start = time.perf_counter()
        try:
            out = await loop.run_in_executor(self._pool, self._step, self._gather(group), group)
        except Exception as exc:  # noqa: BLE001 - a failing step fails what it must, no more
            if len(group) > 1 and not isinstance(exc, _PostFailed):
                # which chunk broke the batch is unknown: run them one by one, so only the
                # chunk(s) that fail alone fail (decoders untouched: the hook never ran)
                for r in group:
                    if self._live([r]):
                        await self._execute(loop, [r])
                return
            self._fail(group, exc)
            return
        elapsed = time.perf_counter() - start
        self.metrics.compute_s += elapsed
        self.metrics.compute_s_per_step.append(elapsed)
        self.metrics.steps += 1
        self.metrics.chunks += len(group)
        self.metrics.batch_sizes[len(group)] += 1
        for i, r in enumerate(group):
            if r.sid in self._states:  # it may have closed while the step ran
                self._states[r.sid] = {k.removeprefix("new_"): v[i : i + 1]
                                       for k, v in out.items() if k.startswith("new_state_")}
            if not r.future.done():
                r.future.set_result(out["outputs"][i])

    def _fail(self, group: list[_Request], exc: Exception) -> None:
        """Each chunk of the group gets a StreamError; the streams' states stay untouched."""
        self.metrics.failed_chunks += len(group)
        for r in group:
            if not r.future.done():
                r.future.set_exception(StreamError(
                    f"model step failed for a batch of {len(group)} chunk(s): "
                    f"{type(exc).__name__}: {exc}"))
