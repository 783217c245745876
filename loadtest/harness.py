"""What the reliability commands (faults, fuzz, soak) share: the server they drive, its HTTP
routes, and healthy real-time streams of real speech whose transcripts are checked against
their solo runs.

A `Target` is a running server given by URL (`ws://HOST:PORT/v1/stream` and gRPC `HOST:PORT`)
or one these commands start themselves (`ServerProcess`: `chorus serve` as a separate process
with a YAML config, so its limits can be made small enough to reach cheaply, and its PID is
known for psutil). A healthy stream is one utterance per connection over WebSocket or native
gRPC, paced in real time (100 ms frames, loadtest/timing.py), continuous (a final per
utterance); it is intact when it ended normally and its finals equal those of the same audio
streamed alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from loadtest.timing import FRAME_BYTES, FRAME_S, RATE, SendLog, frames, paced, paced_sync

START = {"type": "start", "continuous": True, "interim_results": True}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- the server --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """A server to drive: its WebSocket URL, its gRPC address (None: WebSocket only), the API
    key its clients present (None: none)."""

    ws_url: str
    grpc: str | None = None
    api_key: str | None = None

    @property
    def http(self) -> str:
        """The HTTP base of the WebSocket port (/healthz, /metrics)."""
        u = urlparse(self.ws_url)
        return f"{'https' if u.scheme == 'wss' else 'http'}://{u.netloc}"

    @property
    def host_port(self) -> tuple[str, int]:
        u = urlparse(self.ws_url)
        return u.hostname or "127.0.0.1", u.port or (443 if u.scheme == "wss" else 80)

    def ws_headers(self) -> dict[str, str] | None:
        return auth_headers(self.api_key)

    def grpc_metadata(self) -> tuple[tuple[str, str], ...]:
        return auth_metadata(self.api_key)


def auth_headers(key: str | None) -> dict[str, str] | None:
    """The WebSocket handshake's API key header (None: no key)."""
    return {"Authorization": f"Bearer {key}"} if key else None


def auth_metadata(key: str | None) -> tuple[tuple[str, str], ...]:
    """The gRPC call's API key metadata (empty: no key)."""
    return (("authorization", f"Bearer {key}"),) if key else ()


def backend_spec(backend: str) -> tuple[str, bool]:
    """A load tool's backend name -> (chorus serve's --backend, int8): "torch+int8" is the torch
    backend with --int8; any other suffix is a ValueError naming it."""
    name, _, precision = backend.partition("+")
    if precision not in ("", "int8"):
        raise ValueError(f"backend {backend!r}: the only precision suffix is '+int8' "
                         "(e.g. torch+int8)")
    return name, precision == "int8"


class ServerProcess:
    """`chorus serve` as a separate process on free loopback ports, with `config` (ServerConfig
    fields, `limits:` as a mapping) written to a YAML file; its log goes to a file (a pipe
    nobody reads would fill up and block it)."""

    def __init__(self, *, bundle: str | None = None, backend: str = "onnxruntime",
                 threads: int = 1, decoder: str | None = None, policy: str = "eager",
                 config: dict[str, Any] | None = None, extra: Sequence[str] = (),
                 prefix: str = "chorus-server-", workers: int = 1):
        import yaml

        name, int8 = backend_spec(backend)
        self.ws_port, self.grpc_port = free_port(), free_port()
        self.config = dict(config or {})
        fd, cfg_path = tempfile.mkstemp(prefix=prefix, suffix=".yaml")
        os.close(fd)
        self.config_path = Path(cfg_path)
        self.config_path.write_text(yaml.safe_dump(self.config))
        cmd = [sys.executable, "-m", "clients.cli", "serve", "--config", str(self.config_path),
               "--ws-port", str(self.ws_port), "--grpc-port", str(self.grpc_port),
               "--policy", policy, "--backend", name, "--threads", str(threads),
               "--workers", str(workers), *(["--int8"] if int8 else []), *extra]
        # one process unless asked: faults, fuzz and soak watch that process (the server's
        # default is one per core)
        if bundle:
            cmd += ["--bundle", bundle]
        if decoder:
            cmd += ["--decoder", decoder]
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(threads)}
        self.log = Path(tempfile.mkstemp(prefix=prefix, suffix=".log")[1])
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if "chorus: listening on" in self.log.read_text() and self._accepting():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the server did not start: {self.log.read_text()[-2000:]}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def target(self) -> Target:
        keys = self.config.get("api_keys") or ()
        return Target(f"ws://127.0.0.1:{self.ws_port}/v1/stream", f"127.0.0.1:{self.grpc_port}",
                      keys[0] if keys else None)

    def _accepting(self) -> bool:
        """Both ports take TCP connections (gRPC may finish binding just after start())."""
        for port in (self.ws_port, self.grpc_port):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return False
        return True

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_seconds(self) -> float:
        """CPU time of the server: its process and its children (`--workers` processes),
        from /proc; NaN where there is no /proc."""
        def stat(pid: str) -> list[str] | None:
            try:
                return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                return None

        own = stat(str(self.proc.pid))
        if own is None:
            return float("nan")
        total = int(own[11]) + int(own[12])
        for entry in os.listdir("/proc"):
            if entry.isdigit() and (f := stat(entry)) is not None and f[1] == str(self.proc.pid):
                total += int(f[11]) + int(f[12])
        return total / os.sysconf("SC_CLK_TCK")

    def sigterm(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> int | None:
        """SIGTERM (a drain), then the exit code; killed if it does not exit within 60 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.config_path.unlink(missing_ok=True)
        return self.proc.returncode


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body); status 0 when nothing answered (refused, timed out)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return 0, ""


async def healthy_server(target: Target, timeout: float = 5.0) -> bool:
    """/healthz answers 200 within `timeout` (the process runs and its event loop turns)."""
    status, _ = await asyncio.to_thread(http_get, target.http + "/healthz", timeout)
    return status == 200


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {"name{labels}": value} (comments skipped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


async def scrape(target: Target) -> dict[str, float]:
    status, text = await asyncio.to_thread(http_get, target.http + "/metrics")
    return parse_metrics(text) if status == 200 else {}


# ---- audio -------------------------------------------------------------------------------------
def speech_pool(manifest: Path | None = None, limit: int = 10,
                seconds: float | None = None) -> list[bytes]:
    """Real speech as 16 kHz PCM16: Lhotse cuts, else sentences synthesized with espeak-ng
    (two voices); each cut to at most `seconds` (whole 100 ms frames) when given."""
    from loadtest.dispatch_bench import load_audio_pool
    from models.audio import to_pcm16

    pool = [to_pcm16(a) for a in load_audio_pool(manifest, limit=limit)][:limit]
    if seconds is not None:
        cut = max(1, int(seconds / FRAME_S)) * FRAME_BYTES
        pool = [p[:cut] for p in pool]
    return pool


# ---- healthy streams ---------------------------------------------------------------------------
@dataclass
class Utterance:
    """One utterance on one connection: its finals' texts and how it ended."""

    protocol: str
    index: int  # which audio of the pool
    finals: list[str] = field(default_factory=list)
    ended: bool = False  # `end` + close 1000 (WebSocket), status OK (gRPC)
    error: str | None = None  # what went wrong, one line
    close_code: int | None = None  # WebSocket: the server's close code
    seconds: float = 0.0
    admitted: bool = False  # the server took the stream: `ready` (WebSocket), a response (gRPC)
    finished: bool = False  # the utterance's client returned (set by HealthyStreams)


async def ws_utterance(target: Target, pcm: bytes, index: int = 0, *, realtime: bool = True,
                       start: dict[str, Any] | None = None, timeout: float = 60.0,
                       utt: Utterance | None = None) -> Utterance:
    """Stream `pcm` on a new WebSocket connection: start, frames, stop; collect the finals
    (`utt`: the record to fill)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    utt = utt or Utterance("ws", index)
    t_begin = time.perf_counter()
    try:
        async with connect(target.ws_url, additional_headers=target.ws_headers(), max_size=None,
                           open_timeout=timeout) as ws:
            await ws.send(json.dumps(start or START))
            ready = json.loads(await asyncio.wait_for(ws.recv(), timeout))
            if ready.get("type") != "ready":
                utt.error = f"{ready.get('code')}: {ready.get('message')}"
                return utt
            utt.admitted = True

            async def reader() -> None:
                async for raw in ws:
                    msg = json.loads(raw)
                    if msg["type"] == "final":
                        utt.finals.append(msg["text"])
                    elif msg["type"] == "error":
                        utt.error = f"{msg['code']}: {msg['message']}"
                    elif msg["type"] == "end":
                        utt.ended = True

            task = asyncio.ensure_future(reader())
            try:
                async for f in paced(frames(pcm), SendLog(), realtime=realtime):
                    if task.done():
                        break
                    await ws.send(f)
                if not task.done():
                    await ws.send(json.dumps({"type": "stop"}))
                await asyncio.wait_for(task, timeout)
            except ConnectionClosed:
                pass
            finally:
                if not task.done():
                    task.cancel()
                task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved
            utt.close_code = ws.close_code
    except Exception as exc:  # noqa: BLE001 - a healthy stream reports, never raises
        utt.error = utt.error or f"{type(exc).__name__}: {exc}"
    utt.ended = utt.ended and utt.close_code == 1000 and utt.error is None
    utt.seconds = time.perf_counter() - t_begin
    return utt


def native_pb() -> tuple[Any, Any]:
    from server.grpc_codegen import generated

    return generated()


def pcm_config(pb: Any, *, continuous: bool = True, interim: bool = True) -> Any:
    return pb.StreamingConfig(config=pb.RecognitionConfig(format=pb.AudioFormat(
        encoding=pb.PCM_S16LE, sample_rate_hertz=RATE)), interim_results=interim,
        continuous=continuous)


async def grpc_utterance(target: Target, pcm: bytes, index: int = 0, *, realtime: bool = True,
                         timeout: float = 60.0, utt: Utterance | None = None) -> Utterance:
    """Stream `pcm` over native gRPC StreamingRecognize: config, audio, half-close (`utt`: the
    record to fill; `admitted` once the first response came).

    The call runs on its own thread with grpc's blocking client, as Riva's Python client does,
    not grpc.aio: an aio client whose write is still in flight when the server's status
    arrives reports INTERNAL "Internal error from Core" in place of that status (the failed
    write overwrites it; 13 of 48 fast writers ended by a SIGTERM drain read it), so an error
    the server sent on purpose would read as a server bug. The blocking client reads the
    status the server sent (56 of 56)."""
    import threading

    import grpc

    pb, pb_grpc = native_pb()
    utt = utt or Utterance("grpc", index)
    t_begin = time.perf_counter()
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    call: list[Any] = []  # the call, for a cancel from the event loop

    def requests() -> Any:
        yield pb.StreamingRecognizeRequest(streaming_config=pcm_config(pb))
        for f in paced_sync(frames(pcm), SendLog(), realtime=realtime):
            yield pb.StreamingRecognizeRequest(audio=f)

    def run() -> None:
        assert target.grpc is not None
        try:
            with grpc.insecure_channel(target.grpc) as ch:
                responses = pb_grpc.AsrStub(ch).StreamingRecognize(
                    requests(), metadata=target.grpc_metadata(),
                    timeout=timeout + len(pcm) / 2 / RATE)
                call.append(responses)
                for resp in responses:
                    utt.admitted = True
                    utt.finals += [r.text for r in resp.results if r.is_final]
            utt.ended = True
        except grpc.RpcError as exc:
            utt.error = f"{exc.code().name}: {exc.details()}"
        except Exception as exc:  # noqa: BLE001 - a healthy stream reports, never raises
            utt.error = f"{type(exc).__name__}: {exc}"
        finally:
            try:
                loop.call_soon_threadsafe(lambda: finished.done() or finished.set_result(None))
            except RuntimeError:  # the loop is closed: nobody waits for this utterance
                pass

    threading.Thread(target=run, name=f"grpc-utterance-{index}", daemon=True).start()
    try:
        await asyncio.shield(finished)
    except asyncio.CancelledError:  # the caller gave up: the call ends too
        if call:
            call[0].cancel()
        raise
    utt.seconds = time.perf_counter() - t_begin
    return utt


async def utterance(protocol: str, target: Target, pcm: bytes, index: int = 0, *,
                    realtime: bool = True, utt: Utterance | None = None) -> Utterance:
    if protocol == "grpc":
        return await grpc_utterance(target, pcm, index, realtime=realtime, utt=utt)
    return await ws_utterance(target, pcm, index, realtime=realtime, utt=utt)


async def solo_finals(target: Target, pool: list[bytes]) -> list[list[str]]:
    """Each audio of the pool streamed alone (as fast as the server takes it: endpointing
    counts model frames, not wall time, so pacing does not change the finals)."""
    out = []
    for i, pcm in enumerate(pool):
        utt = await ws_utterance(target, pcm, i, realtime=False)
        if not utt.ended:
            raise RuntimeError(f"the solo run of audio {i} failed: {utt.error}")
        out.append(utt.finals)
    return out


class HealthyStreams:
    """`n` workers, each streaming one utterance per connection in real time, again and again
    until `stop()` (the utterance under way is finished). Worker i plays audio i, i+n, ... of
    the pool over protocols[i % len(protocols)]. While `hold` is set, workers do not open new
    connections (a fault that fills the server's capacity must not take a healthy stream's
    place); open streams go on."""

    def __init__(self, target: Target, pool: list[bytes], solo: list[list[str]], n: int,
                 protocols: Sequence[str] = ("ws",), hold: asyncio.Event | None = None,
                 loop: bool = True):
        self.target, self.pool, self.solo = target, pool, solo
        self.protocols = tuple(protocols)
        self.hold = hold or asyncio.Event()
        self.loop = loop
        self.done: list[Utterance] = []
        self.current: dict[int, Utterance] = {}  # worker -> its utterance under way
        self._stop = asyncio.Event()
        self._tasks = [asyncio.ensure_future(self._worker(i, n)) for i in range(n)]

    async def _worker(self, i: int, n: int) -> None:
        await asyncio.sleep(i / max(1, n) * FRAME_S)  # staggered
        k = i
        while True:
            while self.hold.is_set() and not self._stop.is_set():
                await asyncio.sleep(0.02)
            idx = k % len(self.pool)
            protocol = self.protocols[i % len(self.protocols)]
            self.current[i] = Utterance(protocol, idx)
            self.done.append(await utterance(protocol, self.target, self.pool[idx], idx,
                                             utt=self.current[i]))
            self.current[i].finished = True
            k += n
            if self._stop.is_set() or not self.loop:
                return

    async def admitted(self, timeout: float) -> bool:
        """Wait until every worker's utterance under way has been taken by the server (or has
        already ended); False when `timeout` seconds pass first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.current) == len(self._tasks) and all(
                    u.admitted or u.finished for u in self.current.values()):
                return True
            await asyncio.sleep(0.01)
        return False

    def intact(self, utt: Utterance) -> bool:
        return utt.ended and utt.error is None and utt.finals == self.solo[utt.index]

    async def stop(self) -> list[Utterance]:
        """Let each worker finish its utterance; all utterances since the start (or the last
        stop), in order of completion."""
        self._stop.set()
        await asyncio.gather(*self._tasks)
        done, self.done = self.done, []
        return done

    def summary(self, done: list[Utterance]) -> dict[str, Any]:
        bad = [u for u in done if not self.intact(u)]
        return {"intact": len(done) - len(bad), "total": len(done),
                "examples": [describe(u, self.solo[u.index]) for u in bad[:3]]}


def describe(u: Utterance, want: list[str]) -> str:
    if u.error:
        return f"{u.protocol} audio {u.index}: {u.error}"
    if not u.ended:
        return f"{u.protocol} audio {u.index}: did not end (close {u.close_code})"
    return f"{u.protocol} audio {u.index}: finals {u.finals!r} != solo {want!r}"


def progress(tag: str, text: str) -> None:
    print(f"[{tag}] {text}", flush=True)


def write_report(out_dir: Path, stem: str, result: dict[str, Any], table: str) -> list[Path]:
    """A command's result as out_dir/stem.json and its markdown table as stem.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
    paths[0].write_text(json.dumps(result, indent=1, default=str) + "\n")
    paths[1].write_text(table)
    return paths


def target_or_server(cfg: Any, tag: str, config: dict[str, Any], ws: str | None, grpc: str | None,
                     api_key: str | None, progress_on: bool) -> tuple[Target, Any]:
    """The server given by URL, or (none given) a `chorus serve` started with `config`."""
    if ws is not None:
        return Target(ws, grpc, api_key), None
    if progress_on:
        progress(tag, "starting chorus serve (" + json.dumps(config) + ")")
    server = ServerProcess(bundle=cfg.bundle, backend=cfg.backend, threads=cfg.threads,
                           decoder=cfg.decoder, config=config, prefix=f"chorus-{tag}-")
    return server.target(), server
