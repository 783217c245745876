"""Every core: `chorus serve --workers N` runs N serving processes behind the same ports.

One Python process serves about one core (the GIL: the event loop's per-stream work and the
model step share it), so a server on a machine with C cores runs C workers: each a whole
server (its own App: bundle, backend, Batch Dispatch) listening on the same WebSocket, gRPC,
Vosk and HTTP ports with SO_REUSEPORT, the kernel spreading new connections across them. What
must stay one across the workers:

- admission (`Slots`): one shared array of each worker's open and detached streams, changed
  under one lock; a stream is admitted only while the sum over workers is below max_streams
  (a worker's dispatcher alone would admit max_streams of its own);
- metrics: each worker also listens on private Unix sockets in the supervisor's run directory
  (`ws-I.sock`: WebSocket + HTTP; `grpc-I.sock`); /metrics on any worker gathers every
  worker's own numbers from them and sums them (server.metrics.merge_exposition);
- resume: a resume token names the worker that holds its stream (`wI.` + random); a resume
  that lands on another worker is relayed, for the rest of that connection, to the owner's
  private socket (WebSocket: server.ws.relay; gRPC: server.grpc_native). Only reconnects pay
  the relay's copy of each message;
- signals: the supervisor forwards SIGTERM / SIGINT to every worker; each drains as a single
  server does (owed finals first) but closes its ports only once every worker has drained
  (a shared flag each; a listener closed early resets the connections queued on it, so the
  port answers 503 until the whole drain ends); the supervisor exits 0 when all did. A worker that dies
  on its own takes the others down (exit 1): an orchestrator restarts the whole server.

Hand-written: gunicorn's and uvicorn's workers serve WSGI / ASGI apps; this server is three
protocol stacks (websockets, grpc.aio, an HTTP server) on one event loop per process, so the
supervisor only needs to start, signal and reap processes (multiprocessing, spawn).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("chorus.workers")
START_TIMEOUT_S = 300.0  # a worker loads the bundle and backend before it is ready


@dataclass(frozen=True)
class Worker:
    """Which worker this process is (`index` of `count`) and where its siblings listen."""

    index: int
    count: int
    rundir: str

    @property
    def prefix(self) -> str:
        """What this worker's resume tokens start with (never in a URL-safe base64 token)."""
        return f"w{self.index}."

    def ws_socket(self, index: int | None = None) -> str:
        return os.path.join(self.rundir, f"ws-{self.index if index is None else index}.sock")

    def grpc_target(self, index: int | None = None) -> str:
        return f"unix:{self.rundir}/grpc-{self.index if index is None else index}.sock"

    def owner(self, token: Any) -> int | None:
        """The other worker that holds `token`'s stream, or None (this one, or not a token of
        any worker: then this worker answers, e.g. unknown_token)."""
        if not isinstance(token, str) or not token.startswith("w") or "." not in token[:8]:
            return None
        head = token[1:token.index(".")]
        if not head.isdigit() or int(head) == self.index or int(head) >= self.count:
            return None
        return int(head)


class Slots:
    """Streams open and detached in every worker (a shared array: opens[0..N), detached[N..2N)),
    for admission across processes, and whose drain is done (drained[2N..3N)). Each worker
    writes only its own cells; `take` checks the sum and counts in under the array's lock."""

    def __init__(self, shared: Any, worker: Worker, max_streams: int):
        self.shared, self.worker, self.max_streams = shared, worker, max_streams

    def take(self) -> bool:
        """Count a new stream in, if the workers together have a slot left."""
        with self.shared.get_lock():
            if sum(self.shared[:self.worker.count]) >= self.max_streams:
                return False
            self.shared[self.worker.index] += 1
            return True

    def give(self) -> None:
        with self.shared.get_lock():
            self.shared[self.worker.index] -= 1

    def detached(self, delta: int) -> None:
        with self.shared.get_lock():
            self.shared[self.worker.count + self.worker.index] += delta

    def drained(self) -> None:
        """This worker's drain is done (its connections ended or were cut)."""
        with self.shared.get_lock():
            self.shared[2 * self.worker.count + self.worker.index] = 1

    @property
    def all_drained(self) -> bool:
        """Every worker's drain is done: only then may a worker close its listeners (one that
        closes earlier resets the connections the kernel queued on its SO_REUSEPORT socket)."""
        with self.shared.get_lock():
            n = self.worker.count
            return all(self.shared[2 * n:3 * n])

    @property
    def open(self) -> int:
        with self.shared.get_lock():
            return sum(self.shared[:self.worker.count])

    @property
    def attached(self) -> int:
        """Streams open and attached to a connection, over every worker (a detached stream's
        slot is the resume's: the capacity check for a new connection leaves it out)."""
        with self.shared.get_lock():
            n = self.worker.count
            return sum(self.shared[:n]) - sum(self.shared[n:2 * n])


async def http_get_unix(path: str, target: str, timeout_s: float = 2.0) -> bytes:
    """GET `target` over the Unix socket `path` (a sibling worker's private port) -> the body;
    OSError / TimeoutError / ValueError when it does not answer 200."""
    async def get() -> bytes:
        reader, writer = await asyncio.open_unix_connection(path)
        try:
            writer.write(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                         .encode("latin-1"))
            await writer.drain()
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            if head[0].split(" ")[1:2] != ["200"]:
                raise ValueError(f"{path}{target}: {head[0]}")
            length = next((int(h.split(":", 1)[1]) for h in head[1:]
                           if h.lower().startswith("content-length:")), None)
            return await (reader.read() if length is None else reader.readexactly(length))
        finally:
            writer.close()

    return await asyncio.wait_for(get(), timeout_s)


def check_ports(cfg: Any) -> None:
    for name in ("ws_port", "grpc_port"):
        if getattr(cfg, name) == 0:
            raise ValueError(f"workers > 1 need fixed ports: {name} is 0 (each worker would "
                             f"get a port of its own); give --{name.replace('_', '-')}")


def _worker_main(cfg: Any, worker: Worker, shared: Any) -> None:
    """A worker process: one whole server; a start-up error goes to the supervisor in one line."""
    from models.backends import BackendUnavailable
    from models.bundle import BundleError
    from server.serve import serve

    logging.basicConfig(level=logging.INFO,
                        format=f"%(asctime)s %(levelname)s %(name)s[w{worker.index}]: %(message)s")
    rundir = Path(worker.rundir)
    try:
        code = asyncio.run(serve(cfg, worker=worker, shared=shared, quiet=True,
                                 ready_file=rundir / f"ready-{worker.index}"))
    except (BundleError, BackendUnavailable, ValueError, OSError) as exc:
        (rundir / f"error-{worker.index}").write_text(str(exc))
        raise SystemExit(2) from None
    raise SystemExit(code)


def resolve_count(workers: int, cfg: Any = None) -> int:
    """`workers` as configured -> how many processes. 0 (the default): one per core this
    process may use (divided by the model threads each worker runs), except with the model on
    a GPU (one process feeds it) or an ephemeral port (each worker would get its own): one."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0: one per core), got {workers}")
    if workers:
        return workers
    if cfg is not None and (getattr(cfg, "device", "cpu") != "cpu"
                            or 0 in (getattr(cfg, "ws_port", 1), getattr(cfg, "grpc_port", 1))):
        return 1
    threads = max(int(getattr(cfg, "threads", 1) or 1), 1) if cfg is not None else 1
    return max(usable_cores() // threads, 1)


def usable_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may run on (its affinity), capped by a cgroup CPU quota (a
    container's `--cpus`, a pod's CPU limit: cgroup v2 cpu.max, or v1 cpu.cfs_quota_us),
    rounded up."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = period = None
    try:
        fields = (cgroup / "cpu.max").read_text().split()
        if fields and fields[0] != "max":
            quota, period = int(fields[0]), int(fields[1])
    except (OSError, ValueError, IndexError):
        try:
            quota = int((cgroup / "cpu/cpu.cfs_quota_us").read_text())
            period = int((cgroup / "cpu/cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            pass
    if quota is not None and period and quota > 0:
        cores = min(cores, max(-(-quota // period), 1))
    return cores


def supervise(cfg: Any, count: int) -> int:
    """Run `count` workers until a signal (then each drains) or one dies; the exit code."""
    check_ports(cfg)
    ctx = multiprocessing.get_context("spawn")
    rundir = Path(tempfile.mkdtemp(prefix="chorus-workers-"))
    shared = ctx.Array("i", 3 * count)  # Slots: opens, detached, drained
    procs = [ctx.Process(target=_worker_main, args=(cfg, Worker(i, count, str(rundir)), shared),
                         name=f"chorus-worker-{i}", daemon=False) for i in range(count)]
    stopping = False

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        if not stopping:
            print("chorus: draining", flush=True)
        stopping = True
        for p in procs:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGTERM)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        code: int | None = 1
        try:
            for p in procs:
                p.start()
            code = _run(procs, rundir, cfg, lambda: stopping)
        finally:
            if code is not None:  # a worker failed (or would not start): the others stop too
                stopping = True
                for p in procs:
                    if p.is_alive() and p.pid is not None:
                        os.kill(p.pid, signal.SIGTERM)
            for p in procs:
                if p.pid is not None:
                    p.join(cfg.drain_timeout_s + 10)
                    if p.is_alive():
                        p.kill()
                        p.join()
        if code is None:
            codes = [p.exitcode or 0 for p in procs]
            code = max(codes, key=abs)
            print("chorus: stopped", flush=True)
        return code
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        shutil.rmtree(rundir, ignore_errors=True)


def _run(procs: list[Any], rundir: Path, cfg: Any, stopping: Any) -> int | None:
    """Wait for every worker to be ready, announce, then for a signal or a worker's death;
    None after a signal, else the exit code to return (a start-up error is raised)."""
    from multiprocessing.connection import wait

    deadline = time.monotonic() + START_TIMEOUT_S
    while not all((rundir / f"ready-{i}").exists() for i in range(len(procs))):
        for i, p in enumerate(procs):
            if not p.is_alive():
                err = rundir / f"error-{i}"
                if err.exists():
                    raise ValueError(err.read_text())
                if stopping():
                    return None
                log.error("worker %d exited (%s) before it was ready", i, p.exitcode)
                return 1
        if time.monotonic() > deadline:
            log.error("workers not ready within %gs", START_TIMEOUT_S)
            return 1
        time.sleep(0.05)
    scheme = "wss" if cfg.tls_cert else "ws"
    print(f"chorus: listening on {scheme}://{cfg.host}:{cfg.ws_port}/v1/stream and gRPC "
          f"{cfg.host}:{cfg.grpc_port}"
          + (f" and Vosk {scheme}://{cfg.host}:{cfg.vosk_port}" if cfg.vosk_port else "")
          + (f" and OpenAI-compatible http{'s' if cfg.tls_cert else ''}://{cfg.host}:"
             f"{cfg.http_port}/v1" if cfg.http_port else "")
          + f" ({len(procs)} workers)", flush=True)
    while not stopping():
        wait([p.sentinel for p in procs], timeout=0.2)
        dead = [(i, p.exitcode) for i, p in enumerate(procs) if not p.is_alive()]
        if dead and not stopping():
            log.error("worker %d exited (%s): stopping the others", *dead[0])
            return 1
    return None
