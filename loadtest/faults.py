"""`chorus loadtest faults`: each fault injected into a real server while healthy real-time
streams of real speech run beside it.

For every fault the report says what the faulty client got (the WebSocket close code, the
`error` message's code and text, the HTTP status of a refused handshake, or the gRPC status and
details) against what docs/protocol.md promises, and whether every healthy stream that ran
beside it stayed intact: it ended normally and its finals equal those of the same audio
streamed alone before the faults (`HealthyStreams`). The faults: connections cut by a TCP
reset mid-utterance (SO_LINGER 0) and gRPC calls cancelled mid-utterance, one at a time and
many per second (each resumed afterwards: the resumed stream must give the solo finals); slow
readers; malformed audio (odd PCM frames, NaN floats, broken WAV headers and chunks);
oversize frames and messages; bad JSON and JSON that is not an object; absurd sample rates,
unsupported encodings and channels; protocol misuse (audio before start, start twice, junk
resume tokens); bad API keys; over capacity; idle clients; and, on a server this command
started itself, the SIGTERM drain.

Given `--ws` (and `--grpc`), it drives that server; tell it the server's limits
(`--idle-timeout-s`, `--max-frame-bytes`) and key (`--api-key`). Without, it starts `chorus
serve` with small limits (below, `STARTED`) so every fault is reached in seconds. Faults run
in rounds of `per_round` (1: each fault has its own healthy streams; more: a quicker run whose
healthy verdict is shared by the round).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.harness import (
    HealthyStreams,
    ServerProcess,
    Target,
    auth_headers,
    auth_metadata,
    describe,
    healthy_server,
    native_pb,
    pcm_config,
    progress,
    scrape,
    solo_finals,
    speech_pool,
    target_or_server,
    write_report,
)
from loadtest.timing import FRAME_BYTES, FRAME_S, frames

# a server this command starts: limits small enough that every fault is reached at once
STARTED: dict[str, Any] = {
    "api_keys": ["faults-key"], "max_streams": 32, "send_queue": 8, "ws_send_buffer": 8192,
    "resume_window_s": 3.0, "drain_timeout_s": 15.0,
    # 3 s: short enough for the idle faults, long enough that a starved healthy client (a
    # loaded 2-core machine) does not idle out between its frames
    "limits": {"idle_timeout_s": 3.0, "max_frame_bytes": 65536},
}
OWN = object()  # "the target's own API key"


@dataclass(frozen=True)
class FaultsConfig:
    healthy: int = 4  # healthy streams beside each fault
    protocols: tuple[str, ...] = ("ws", "grpc")  # of the healthy streams, in turn
    healthy_seconds: float | None = None  # cut each healthy utterance to this (None: whole)
    per_round: int = 1  # faults run one after another beside the same healthy streams
    burst_rate: float = 20.0  # aborts / cancels per second in the "many per second" faults
    burst_s: float = 1.0
    only: tuple[str, ...] = ()  # run only faults whose name starts with one of these
    timeout_s: float = 120.0  # a fault that takes longer is a hang
    # what must be known of a server given by URL (a started one is configured by STARTED)
    idle_timeout_s: float = 30.0
    max_frame_bytes: int = 1 << 20
    fill_max: int = 512  # over capacity: open at most this many streams looking for the limit
    drain: bool = True  # a started server: SIGTERM drain as the last fault
    # a started server
    bundle: str | None = None
    backend: str = "onnxruntime"
    threads: int = 1
    decoder: str | None = None


@dataclass
class Outcome:
    got: str  # what the faulty client got, one line
    ok: bool
    skipped: bool = False


@dataclass
class Ctx:
    cfg: FaultsConfig
    target: Target
    pool: list[bytes]
    solo: list[list[str]]
    clip: bytes  # the short utterance the bursts play
    clip_solo: list[str]
    keys_on: bool
    idle_s: float
    max_frame: int
    server: ServerProcess | None
    hold: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def grpc(self) -> str:
        assert self.target.grpc is not None
        return self.target.grpc


@dataclass(frozen=True)
class Fault:
    name: str
    expected: str
    run: Callable[[Ctx], Awaitable[Outcome]]
    grpc: bool = False  # needs the gRPC port
    keys: bool = False  # needs a server with API keys
    started: bool = False  # needs a server this command started


# ---- what a faulty WebSocket client sees -----------------------------------------------------
@dataclass
class WsSeen:
    http_status: int | None = None
    retry_after: str | None = None
    close_code: int | None = None
    close_reason: str = ""
    error: dict[str, Any] | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    hung: bool = False

    def line(self) -> str:
        if self.http_status is not None:
            extra = f" Retry-After: {self.retry_after}" if self.retry_after else ""
            return f"HTTP {self.http_status}{extra}"
        if self.hung:
            return "no close within the timeout (hang)"
        if self.error is not None:
            reason = f" ({self.error['reason']})" if "reason" in self.error else ""
            return (f"close {self.close_code} {self.error['code']}{reason}: "
                    f"{str(self.error.get('message'))[:90]}")
        return f"close {self.close_code} {self.close_reason!r} (no error message)"


def ws_connect(ctx: Ctx, key: Any = OWN, **kw: Any) -> Any:
    from websockets.asyncio.client import connect

    key = ctx.target.api_key if key is OWN else key
    return connect(ctx.target.ws_url, additional_headers=auth_headers(key), max_size=None,
                   open_timeout=10, close_timeout=5, proxy=None, **kw)


async def ws_exchange(ctx: Ctx, sends: list[Any], *, key: Any = OWN, timeout: float = 20.0) -> WsSeen:
    """Connect, send `sends` in order (str: text; bytes: binary; ("text", bytes): a text frame of
    raw bytes), then read until the server closes."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    seen = WsSeen()
    try:
        async with ws_connect(ctx, key) as ws:
            try:
                for m in sends:
                    if isinstance(m, tuple):
                        await ws.send(m[1], text=True)
                    else:
                        await ws.send(m)
                async with asyncio.timeout(timeout):
                    async for raw in ws:
                        msg = json.loads(raw)
                        seen.messages.append(msg)
                        if msg.get("type") == "error":
                            seen.error = msg
            except ConnectionClosed:
                pass
            except TimeoutError:
                seen.hung = True
            seen.close_code, seen.close_reason = ws.close_code, ws.close_reason or ""
    except InvalidStatus as exc:
        seen.http_status = exc.response.status_code
        seen.retry_after = exc.response.headers.get("Retry-After")
    return seen


def ws_expect(seen: WsSeen, close: int, code: str | None, fragment: str = "",
              reason: str | None = None) -> Outcome:
    message = str((seen.error or {}).get("message", ""))
    ok = (seen.close_code == close and not seen.hung
          and (code is None or (seen.error or {}).get("code") == code)
          and (reason is None or (seen.error or {}).get("reason") == reason)
          and fragment in (message if code is not None else seen.close_reason))
    return Outcome(seen.line(), ok)


def start_msg(**fields: Any) -> str:
    return json.dumps({"type": "start", "continuous": False, **fields})


def ws_case(name: str, sends: Callable[[Ctx], list[Any]], close: int, code: str | None,
            fragment: str = "", reason: str | None = None) -> Fault:
    expected = f"close {close}" + (f" {code}" if code else "") + (f" ({reason})" if reason else "") \
        + (f" '{fragment}'" if fragment else "")

    async def run(ctx: Ctx) -> Outcome:
        return ws_expect(await ws_exchange(ctx, sends(ctx)), close, code, fragment, reason)

    return Fault(name, expected, run)


# ---- what a faulty gRPC client sees ----------------------------------------------------------
@dataclass
class GrpcSeen:
    status: str = "OK"
    details: str = ""
    responses: list[Any] = field(default_factory=list)
    hung: bool = False

    def line(self) -> str:
        if self.hung:
            return "no status within the timeout (hang)"
        return f"{self.status}: {self.details[:100]}" if self.details else self.status


def riva_pb() -> tuple[Any, Any]:
    import riva.client.proto.riva_asr_pb2 as rasr
    import riva.client.proto.riva_asr_pb2_grpc as rasr_grpc

    return rasr, rasr_grpc


async def grpc_exchange(ctx: Ctx, requests: list[Any], *, service: str = "native", key: Any = OWN,
                        quiet: bool = False, timeout: float = 20.0,
                        options: list[tuple[str, Any]] | None = None) -> GrpcSeen:
    """One StreamingRecognize call with `requests`; `quiet`: then neither send nor half-close.
    The blocking client, in a thread: grpc.aio's client reports its own write that failed
    because the server had already ended the call as INTERNAL "Internal error from Core",
    hiding the status the server sent; the blocking client reports the server's status."""
    import threading

    import grpc

    key = ctx.target.api_key if key is OWN else key
    seen = GrpcSeen()
    gate = threading.Event()

    def reqs() -> Any:
        yield from requests
        if quiet:
            gate.wait(timeout + 5)

    def call() -> None:
        with grpc.insecure_channel(ctx.grpc, options=options) as ch:
            if service == "riva":
                stub = riva_pb()[1].RivaSpeechRecognitionStub(ch)
            else:
                stub = native_pb()[1].AsrStub(ch)
            try:
                for resp in stub.StreamingRecognize(reqs(), metadata=auth_metadata(key),
                                                    timeout=timeout):
                    seen.responses.append(resp)
            except grpc.RpcError as exc:
                seen.status, seen.details = exc.code().name, exc.details() or ""
                # the client's own deadline: the server neither answered nor ended the call
                seen.hung = seen.status == "DEADLINE_EXCEEDED" and seen.details == "Deadline Exceeded"

    try:
        await asyncio.to_thread(call)
    finally:
        gate.set()
    return seen


def grpc_expect(seen: GrpcSeen, status: str, fragment: str) -> Outcome:
    return Outcome(seen.line(), not seen.hung and seen.status == status and fragment in seen.details)


def native_cfg(ctx: Ctx, *, encoding: int = 1, rate: int = 16000, channels: int = 1) -> Any:
    pb, _ = native_pb()
    return pb.StreamingRecognizeRequest(streaming_config=pb.StreamingConfig(
        config=pb.RecognitionConfig(format=pb.AudioFormat(encoding=encoding, sample_rate_hertz=rate,
                                                          channels=channels))))


def native_audio(data: bytes) -> Any:
    return native_pb()[0].StreamingRecognizeRequest(audio=data)


def grpc_case(name: str, requests: Callable[[Ctx], list[Any]], status: str, fragment: str,
              service: str = "native") -> Fault:
    async def run(ctx: Ctx) -> Outcome:
        return grpc_expect(await grpc_exchange(ctx, requests(ctx), service=service), status, fragment)

    return Fault(name, f"{status} '{fragment}'", run, grpc=True)


def riva_requests(encoding: int, rate: int = 16000, language: str = "",
                  audio: bytes = b"\x00\x00" * 1600) -> list[Any]:
    rasr, _ = riva_pb()
    return [rasr.StreamingRecognizeRequest(streaming_config=rasr.StreamingRecognitionConfig(
                config=rasr.RecognitionConfig(encoding=encoding, sample_rate_hertz=rate,
                                              language_code=language))),
            rasr.StreamingRecognizeRequest(audio_content=audio)]


# ---- WAV headers, well and badly formed -------------------------------------------------------
def wav_header(*, tag: int = 1, channels: int = 1, rate: int = 16000, bits: int = 16,
               fmt_size: int = 16, before: bytes = b"", data_size: int = 0) -> bytes:
    m32, m16 = 0xFFFFFFFF, 0xFFFF  # fields wrap, as in a corrupted file
    fmt = struct.pack("<HHIIHH", tag & m16, channels & m16, rate & m32,
                      rate * channels * bits // 8 & m32, channels * bits // 8 & m16, bits & m16)
    fmt = fmt[:fmt_size] if fmt_size < 16 else fmt + b"\0" * (fmt_size - 16)
    body = b"WAVE" + before + b"fmt " + struct.pack("<I", fmt_size) + fmt + b"data" + \
        struct.pack("<I", data_size)
    return b"RIFF" + struct.pack("<I", (len(body) + data_size) & m32) + body


WAV_DATA_FIRST = b"RIFF" + struct.pack("<I", 12) + b"WAVE" + b"data" + struct.pack("<I", 0)
WAV_HUGE_CHUNK = b"RIFF" + struct.pack("<I", 0) + b"WAVE" + b"LIST" + struct.pack("<I", 10**6)


# ---- cut connections and cancelled calls, then resumed ----------------------------------------
async def ws_abort(ctx: Ctx, pcm: bytes, sent: int) -> str | None:
    """Start a stream, send `sent` bytes of `pcm`, then reset the TCP connection (SO_LINGER 0:
    an RST, no close frame). The stream's resume token (None: resume off)."""
    async with ws_connect(ctx) as ws:
        await ws.send(start_msg(continuous=True))
        ready = json.loads(await ws.recv())
        for f in frames(pcm[:sent]):
            await ws.send(f)
        await asyncio.sleep(0.05)  # the server is computing what it got
        sock = ws.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        ws.transport.abort()
    return ready.get("resume_token")


async def ws_resume(ctx: Ctx, token: str, pcm: bytes) -> tuple[bool, list[str], str]:
    """Resume from offset 0 (the server skips what it has) with no finals received, send the
    whole audio and stop: (resumed, finals, what went wrong)."""
    from websockets.exceptions import ConnectionClosed

    finals: list[str] = []
    async with ws_connect(ctx) as ws:
        await ws.send(json.dumps({"type": "resume", "token": token, "offset": 0, "finals": 0}))
        ready = json.loads(await ws.recv())
        if not ready.get("resumed"):
            return False, [], f"{ready.get('code')} ({ready.get('reason')}): {ready.get('message')}"
        try:
            for f in frames(pcm):
                await ws.send(f)
            await ws.send(json.dumps({"type": "stop"}))
            async with asyncio.timeout(60):
                async for raw in ws:
                    msg = json.loads(raw)
                    if msg["type"] == "final":
                        finals.append(msg["text"])
                    elif msg["type"] == "error":
                        return True, finals, f"{msg['code']}: {msg['message']}"
        except ConnectionClosed:
            pass
        return True, finals, "" if ws.close_code == 1000 else f"close {ws.close_code}"


async def grpc_cancel(ctx: Ctx, pcm: bytes, sent: int) -> str | None:
    """A native streaming call: config, `sent` bytes of audio, then cancelled by the client."""
    import grpc

    pb, pb_grpc = native_pb()
    gate = asyncio.Event()

    async def reqs() -> Any:
        yield pb.StreamingRecognizeRequest(streaming_config=pcm_config(pb))
        for f in frames(pcm[:sent]):
            yield pb.StreamingRecognizeRequest(audio=f)
        await gate.wait()

    async with grpc.aio.insecure_channel(ctx.grpc) as ch:
        call = pb_grpc.AsrStub(ch).StreamingRecognize(reqs(), metadata=ctx.target.grpc_metadata())
        first = await call.read()
        await asyncio.sleep(0.05)
        call.cancel()
        gate.set()
    return first.resume_token or None


async def grpc_resume(ctx: Ctx, token: str, pcm: bytes) -> tuple[bool, list[str], str]:
    import grpc

    pb, pb_grpc = native_pb()

    async def reqs() -> Any:
        yield pb.StreamingRecognizeRequest(resume=pb.ResumeRequest(token=token, offset=0, finals=0))
        for f in frames(pcm):
            yield pb.StreamingRecognizeRequest(audio=f)

    resumed, finals = False, []
    try:
        async with grpc.aio.insecure_channel(ctx.grpc) as ch:
            async for resp in pb_grpc.AsrStub(ch).StreamingRecognize(
                    reqs(), metadata=ctx.target.grpc_metadata(), timeout=60):
                resumed = resumed or resp.resumed
                finals += [r.text for r in resp.results if r.is_final]
    except grpc.aio.AioRpcError as exc:
        return resumed, finals, f"{exc.code().name}: {exc.details()}"
    return resumed, finals, ""


def cut_fault(name: str, protocol: str, burst: bool) -> Fault:
    cut, resume = (ws_abort, ws_resume) if protocol == "ws" else (grpc_cancel, grpc_resume)
    how = "TCP reset" if protocol == "ws" else "cancel"
    expected = ("each stream kept: resumed (offset 0) it gives the solo finals" +
                (", server healthy" if burst else ""))

    async def run(ctx: Ctx) -> Outcome:
        pcm, want = (ctx.clip, ctx.clip_solo) if burst else (ctx.pool[0], ctx.solo[0])
        sent = len(pcm) // 2 // FRAME_BYTES * FRAME_BYTES
        if not burst:
            tokens = [await cut(ctx, pcm, sent)]
        else:
            n = max(1, round(ctx.cfg.burst_rate * ctx.cfg.burst_s))
            tasks = []
            for _ in range(n):
                tasks.append(asyncio.ensure_future(cut(ctx, pcm, sent)))
                await asyncio.sleep(1 / ctx.cfg.burst_rate)
            tokens = list(await asyncio.gather(*tasks))
        if any(t is None for t in tokens):
            return Outcome(f"{len(tokens)} x {how}; the server has resume off (no token): "
                           "not resumable", True)
        results = await asyncio.gather(*(resume(ctx, t, pcm) for t in tokens if t))
        good = sum(1 for r, f, err in results if r and not err and f == want)
        bad = next((f"resumed={r} finals={f!r} {err}" for r, f, err in results
                    if not (r and not err and f == want)), "")
        alive = await healthy_server(ctx.target)
        got = (f"{len(tokens)} x {how} mid-utterance; {good}/{len(tokens)} resumed with the solo "
               f"finals" + (f"; e.g. {bad[:80]}" if bad else "") + ("" if alive else "; SERVER DOWN"))
        return Outcome(got, good == len(tokens) and alive)

    return Fault(name, expected, run, grpc=protocol == "grpc")


# ---- slow readers -------------------------------------------------------------------------------
async def too_slow_count(ctx: Ctx) -> float:
    return (await scrape(ctx.target)).get('chorus_errors_total{code="client_too_slow"}', 0.0)


async def wait_too_slow(ctx: Ctx, before: float, limit_s: float) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if await too_slow_count(ctx) > before:
            return True
        await asyncio.sleep(0.2)
    return False


async def ws_slow_reader(ctx: Ctx) -> Outcome:
    """A client with a tiny receive window that sends speech and reads nothing until the
    server has given up on it (chorus_errors{code="client_too_slow"} went up)."""
    from websockets.exceptions import ConnectionClosed

    before = await too_slow_count(ctx)
    host, port = ctx.target.host_port
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    async with ws_connect(ctx, sock=sock, max_queue=1) as ws:
        await ws.send(start_msg(interim_results=True))
        await ws.recv()

        async def send() -> None:
            for f in itertools.cycle(frames(ctx.pool[0], 2 * FRAME_BYTES)):
                await ws.send(f)

        sender = asyncio.ensure_future(send())
        gave_up = await wait_too_slow(ctx, before, 60)
        sender.cancel()
        with contextlib.suppress(BaseException):
            await sender
        if not gave_up:
            return Outcome("the server never gave up on the client (60 s)", False)
        try:
            async with asyncio.timeout(30):
                async for _ in ws:  # reading at last: the backlog in flight, then the close
                    pass
        except (ConnectionClosed, TimeoutError):
            pass
        code, reason = ws.close_code, ws.close_reason
    return Outcome(f"close {code} {reason!r}", (code, reason) == (1008, "client_too_slow"))


async def grpc_slow_reader(ctx: Ctx) -> Outcome:
    """The gRPC twin (a tiny HTTP/2 window, no responses read); the blocking client, in a
    thread (see grpc_exchange)."""
    import threading

    import grpc

    pb, pb_grpc = native_pb()
    before = await too_slow_count(ctx)
    done = threading.Event()
    loop = asyncio.get_running_loop()

    def reqs() -> Any:
        yield pb.StreamingRecognizeRequest(streaming_config=pcm_config(pb, continuous=False))
        for f in itertools.cycle(frames(ctx.pool[0], 2 * FRAME_BYTES)):
            if done.is_set():
                return
            yield pb.StreamingRecognizeRequest(audio=f)

    def call() -> Outcome:
        opts = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]
        with grpc.insecure_channel(ctx.grpc, options=opts) as ch:
            responses = pb_grpc.AsrStub(ch).StreamingRecognize(
                reqs(), metadata=ctx.target.grpc_metadata(), timeout=120)
            gave_up = asyncio.run_coroutine_threadsafe(wait_too_slow(ctx, before, 60), loop).result()
            done.set()
            if not gave_up:
                responses.cancel()
                return Outcome("the server never gave up on the client (60 s)", False)
            seen = GrpcSeen()
            try:
                for _ in responses:  # reading at last: what was in flight, then the status
                    pass
            except grpc.RpcError as exc:
                seen.status, seen.details = exc.code().name, exc.details() or ""
            return grpc_expect(seen, "RESOURCE_EXHAUSTED", "client_too_slow")

    return await asyncio.to_thread(call)


# ---- keys, capacity, idle ---------------------------------------------------------------------
async def ws_bad_key(ctx: Ctx) -> Outcome:
    wrong = await ws_exchange(ctx, [start_msg()], key="not-the-key")
    none = await ws_exchange(ctx, [start_msg()], key=None)
    return Outcome(f"wrong key: {wrong.line()}; no key: {none.line()}",
                   wrong.http_status == 401 and none.http_status == 401)


async def grpc_bad_key(ctx: Ctx) -> Outcome:
    reqs = [native_cfg(ctx), native_audio(b"\0\0" * 1600)]
    wrong = await grpc_exchange(ctx, reqs, key="not-the-key")
    none = await grpc_exchange(ctx, reqs, key=None)
    ok = all(s.status == "UNAUTHENTICATED" and "API key" in s.details for s in (wrong, none))
    return Outcome(f"wrong key: {wrong.line()}; no key: {none.status}", ok)


async def over_capacity(ctx: Ctx) -> Outcome:
    """Open started streams (each sending a little silence now and then, so none idles out)
    until the server refuses one; then a WebSocket and a gRPC stream are refused as
    documented; the fillers close cleanly (their slots free at once)."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    ctx.hold.set()  # healthy streams open no new connection while the server is full
    fillers: list[Any] = []
    stop = asyncio.Event()

    async def keepalive(ws: Any) -> None:
        with contextlib.suppress(ConnectionClosed):
            while not stop.is_set():
                await ws.send(b"\0" * FRAME_BYTES)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.05, ctx.idle_s / 4))

    refused: str | None = None
    tasks = []
    try:
        for _ in range(ctx.cfg.fill_max):
            try:
                ws = await ws_connect(ctx)
            except InvalidStatus as exc:
                refused = (f"HTTP {exc.response.status_code} Retry-After: "
                           f"{exc.response.headers.get('Retry-After')}")
                break
            fillers.append(ws)
            await ws.send(start_msg(interim_results=False))
            msg = json.loads(await ws.recv())
            if msg["type"] != "ready":
                with contextlib.suppress(ConnectionClosed, TimeoutError):
                    await asyncio.wait_for(ws.wait_closed(), 5)
                refused = f"close {ws.close_code} {msg.get('code')}: {msg.get('message', '')[:60]}"
                break
            tasks.append(asyncio.ensure_future(keepalive(ws)))
        if refused is None:
            return Outcome(f"no refusal after {len(fillers)} streams (--fill-max)", True, skipped=True)
        probe = await grpc_exchange(ctx, [native_cfg(ctx), native_audio(b"\0\0" * 1600)]) \
            if ctx.target.grpc else None
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(ws.close() for ws in fillers), return_exceptions=True)
        ctx.hold.clear()
    ws_ok = refused.startswith("HTTP 503 Retry-After: 1") or refused.startswith("close 1013 overloaded")
    got = f"after {len(fillers)} streams: WebSocket {refused}"
    grpc_ok = True
    if probe is not None:
        got += f"; gRPC {probe.line()[:70]}"
        grpc_ok = probe.status == "RESOURCE_EXHAUSTED" and "retry" in probe.details
    return Outcome(got, ws_ok and grpc_ok)


async def ws_idle(ctx: Ctx) -> Outcome:
    seen = await ws_exchange(ctx, [start_msg()], timeout=ctx.idle_s + 15)
    return ws_expect(seen, 1008, "idle_timeout", "no message for")


async def grpc_idle(ctx: Ctx) -> Outcome:
    seen = await grpc_exchange(ctx, [native_cfg(ctx), native_audio(b"\0\0" * 8000)], quiet=True,
                               timeout=ctx.idle_s + 15)
    return grpc_expect(seen, "DEADLINE_EXCEEDED", "idle_timeout_s")


async def grpc_oversize_message(ctx: Ctx) -> Outcome:
    """One request over the server's gRPC receive limit (2 x max_frame_bytes + 64 MiB)."""
    size = 2 * ctx.max_frame + (64 << 20) + 1
    seen = await grpc_exchange(ctx, [native_cfg(ctx), native_audio(b"\0" * size)],
                               options=[("grpc.max_send_message_length", size + 1024)])
    return grpc_expect(seen, "RESOURCE_EXHAUSTED", "larger than max")


# ---- the catalogue ------------------------------------------------------------------------------
def catalogue() -> list[Fault]:
    pcm_nan = struct.pack("<4f", 0.0, float("nan"), 0.0, 0.0)
    s = start_msg
    wav = s(format={"encoding": "wav"})
    rate = "sample_rate must be"
    faults = [
        cut_fault("ws-abort-mid-utterance", "ws", burst=False),
        cut_fault("ws-abort-burst", "ws", burst=True),
        cut_fault("grpc-cancel-mid-utterance", "grpc", burst=False),
        cut_fault("grpc-cancel-burst", "grpc", burst=True),
        Fault("ws-slow-reader", "close 1008 'client_too_slow'", ws_slow_reader),
        Fault("grpc-slow-reader", "RESOURCE_EXHAUSTED 'client_too_slow'", grpc_slow_reader, grpc=True),
        ws_case("ws-odd-pcm16-frame", lambda c: [s(), b"\x00\x01\x02"], 1007, "bad_audio",
                "got a frame of 3 bytes"),
        ws_case("ws-f32-nan", lambda c: [s(format={"encoding": "pcm_f32le"}), pcm_nan], 1007,
                "bad_audio", "NaN"),
        ws_case("ws-wav-not-riff", lambda c: [wav, b"OggS" + b"\0" * 60], 1007, "bad_audio",
                "expects a RIFF/WAVE header"),
        ws_case("ws-wav-short-fmt-chunk", lambda c: [wav, wav_header(fmt_size=4)], 1007,
                "bad_audio", "'fmt ' chunk of 4 bytes; expected at least 16"),
        ws_case("ws-wav-data-before-fmt", lambda c: [wav, WAV_DATA_FIRST], 1007, "bad_audio",
                "'data' chunk before 'fmt '"),
        ws_case("ws-wav-24-bit", lambda c: [wav, wav_header(bits=24)], 1007, "bad_audio",
                "format tag 1 with 24 bits per sample is not supported"),
        ws_case("ws-wav-rate-in-header", lambda c: [wav, wav_header(rate=1000)], 1007, "bad_audio",
                "WAV header: sample_rate must be between"),
        ws_case("ws-wav-huge-chunk", lambda c: [wav, WAV_HUGE_CHUNK], 1007, "bad_audio",
                "does not end within the first 65536 bytes"),
        ws_case("ws-wav-truncated-header", lambda c: [wav, wav_header()[:30],
                                                      json.dumps({"type": "stop"})],
                1007, "bad_audio", "stream ended inside the WAV header"),
        ws_case("ws-oversize-frame", lambda c: [s(), b"\0" * (c.max_frame + 2)], 1009,
                "frame_too_large", "exceeds max_frame_bytes"),
        ws_case("ws-oversize-frame-2x", lambda c: [s(), b"\0" * (2 * c.max_frame + 2)], 1009, None),
        ws_case("ws-bad-json", lambda c: ["{nope"], 1007, "invalid_json", "not JSON"),
        ws_case("ws-json-array", lambda c: ["[]"], 1007, "invalid_json", "got a JSON array"),
        ws_case("ws-json-string", lambda c: ['"start"'], 1007, "invalid_json", "got a JSON string"),
        ws_case("ws-json-null", lambda c: ["null"], 1007, "invalid_json", "got a JSON null"),
        ws_case("ws-json-deep", lambda c: ["[" * 3000 + "]" * 3000], 1007, "invalid_json",
                "nested too deeply"),
        ws_case("ws-json-huge-integer", lambda c: ['{"type": "start", "max_alternatives": '
                                                   + "9" * 5000 + "}"], 1007, "invalid_json",
                "JSON the server cannot read"),
        ws_case("ws-text-not-utf8", lambda c: [("text", b"\xff\xfe{}")], 1007, None),
        ws_case("ws-unknown-type", lambda c: [json.dumps({"type": "pause"})], 1008, "unknown_type",
                "unknown message type 'pause'"),
        ws_case("ws-audio-before-start", lambda c: [b"\0\0" * 100], 1008, "audio_before_start",
                "before the start"),
        ws_case("ws-stop-before-start", lambda c: [json.dumps({"type": "stop"})], 1008,
                "expected_start", "stop before start"),
        ws_case("ws-start-twice", lambda c: [s(), s()], 1007, "bad_config", "sent twice"),
        ws_case("ws-resume-junk-token", lambda c: [json.dumps({"type": "resume", "token": "junk",
                                                               "offset": 0, "finals": 0})],
                1008, "resume_failed", "unknown_token", reason="unknown_token"),
        ws_case("ws-rate-0", lambda c: [s(format={"sample_rate": 0})], 1007, "bad_config", rate),
        ws_case("ws-rate-negative", lambda c: [s(format={"sample_rate": -16000})], 1007,
                "bad_config", rate),
        ws_case("ws-rate-10-MHz", lambda c: [s(format={"sample_rate": 10**7})], 1007, "bad_config",
                rate),
        ws_case("ws-rate-fraction", lambda c: [s(format={"sample_rate": 16000.5})], 1007,
                "bad_config", rate),
        ws_case("ws-rate-string", lambda c: [s(format={"sample_rate": "16000"})], 1007,
                "bad_config", rate),
        ws_case("ws-encoding-opus", lambda c: [s(format={"encoding": "opus"})], 1007, "bad_config",
                "encoding must be one of"),
        ws_case("ws-channels-0", lambda c: [s(format={"channels": 0})], 1007, "bad_config",
                "channels must be an integer 1..8"),
        grpc_case("grpc-odd-pcm16-frame", lambda c: [native_cfg(c), native_audio(b"\0\1\2")],
                  "INVALID_ARGUMENT", "got a frame of 3 bytes"),
        grpc_case("grpc-wav-short-fmt-chunk", lambda c: [native_cfg(c, encoding=4),
                                                         native_audio(wav_header(fmt_size=4))],
                  "INVALID_ARGUMENT", "'fmt ' chunk of 4 bytes"),
        grpc_case("grpc-oversize-frame", lambda c: [native_cfg(c), native_audio(b"\0" * (c.max_frame + 2))],
                  "INVALID_ARGUMENT", "exceeds max_frame_bytes"),
        Fault("grpc-oversize-message", "RESOURCE_EXHAUSTED 'larger than max'", grpc_oversize_message,
              grpc=True),
        grpc_case("grpc-rate-0", lambda c: [native_cfg(c, rate=0)], "INVALID_ARGUMENT", rate),
        grpc_case("grpc-rate-10-MHz", lambda c: [native_cfg(c, rate=10**7)], "INVALID_ARGUMENT", rate),
        grpc_case("grpc-encoding-99", lambda c: [native_cfg(c, encoding=99)], "INVALID_ARGUMENT",
                  "encoding must be one of"),
        grpc_case("grpc-channels-99", lambda c: [native_cfg(c, channels=99)], "INVALID_ARGUMENT",
                  "channels must be an integer 1..8"),
        grpc_case("grpc-config-twice", lambda c: [native_cfg(c), native_cfg(c)], "INVALID_ARGUMENT",
                  "sent twice"),
        grpc_case("grpc-audio-first", lambda c: [native_audio(b"\0\0")], "INVALID_ARGUMENT",
                  "first request must carry streaming_config"),
        grpc_case("grpc-resume-junk-token", lambda c: [native_pb()[0].StreamingRecognizeRequest(
            resume=native_pb()[0].ResumeRequest(token="junk"))], "FAILED_PRECONDITION",
                  "resume_failed: unknown_token"),
        grpc_case("riva-encoding-flac", lambda c: riva_requests(2), "INVALID_ARGUMENT",
                  "encoding FLAC is not supported", service="riva"),
        grpc_case("riva-rate-0", lambda c: riva_requests(1, rate=0), "INVALID_ARGUMENT", rate,
                  service="riva"),
        grpc_case("riva-language-de", lambda c: riva_requests(1, language="de-DE"),
                  "INVALID_ARGUMENT", "not served", service="riva"),
        Fault("ws-bad-api-key", "HTTP 401 (wrong key and no key)", ws_bad_key, keys=True),
        Fault("grpc-bad-api-key", "UNAUTHENTICATED 'API key'", grpc_bad_key, grpc=True, keys=True),
        Fault("over-capacity", "WebSocket HTTP 503 Retry-After: 1 (or close 1013 overloaded); "
              "gRPC RESOURCE_EXHAUSTED 'retry'", over_capacity),
        Fault("ws-idle-client", "close 1008 idle_timeout 'no message for'", ws_idle),
        Fault("grpc-idle-client", "DEADLINE_EXCEEDED 'idle_timeout_s'", grpc_idle, grpc=True),
    ]
    return faults


# ---- the run ------------------------------------------------------------------------------------
def selected(cfg: FaultsConfig, ctx: Ctx) -> tuple[list[Fault], list[dict[str, Any]]]:
    run, skipped = [], []
    for f in catalogue():
        if cfg.only and not any(f.name.startswith(p) for p in cfg.only):
            continue
        why = ("no --grpc address" if f.grpc and not ctx.target.grpc else
               "the server has no API keys" if f.keys and not ctx.keys_on else None)
        if why:
            skipped.append(row(f.name, f.expected, Outcome(f"skipped: {why}", True, skipped=True),
                               None, 0.0))
        else:
            run.append(f)
    return run, skipped


def row(name: str, expected: str, out: Outcome, healthy: dict[str, Any] | None,
        seconds: float) -> dict[str, Any]:
    return {"fault": name, "expected": expected, "got": out.got, "ok": out.ok,
            "skipped": out.skipped, "healthy_intact": healthy["intact"] if healthy else None,
            "healthy_total": healthy["total"] if healthy else None,
            "healthy_examples": healthy["examples"] if healthy else [],
            "seconds": round(seconds, 2)}


async def keys_required(target: Target) -> bool:
    """Whether the server refuses a handshake without a key (HTTP 401)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    try:
        async with connect(target.ws_url, open_timeout=10, proxy=None):
            return False
    except InvalidStatus as exc:
        return exc.response.status_code == 401


async def run_rounds(cfg: FaultsConfig, target: Target, server: ServerProcess | None,
                     pool: list[bytes], progress_on: bool) -> list[dict[str, Any]]:
    solo = await solo_finals(target, pool)
    clip = pool[0][: 10 * FRAME_BYTES]
    clip_solo = (await solo_finals(target, [clip]))[0]
    limits = STARTED["limits"] if server is not None else {}
    ctx = Ctx(cfg, target, pool, solo, clip, clip_solo, await keys_required(target),
              limits.get("idle_timeout_s", cfg.idle_timeout_s),
              limits.get("max_frame_bytes", cfg.max_frame_bytes), server)
    faults, rows = selected(cfg, ctx)
    protocols = tuple(p for p in cfg.protocols if p == "ws" or target.grpc)
    lead = 0.3 * min(len(p) for p in pool) / 2 / 16000
    for r0 in range(0, len(faults), max(1, cfg.per_round)):
        group = faults[r0 : r0 + max(1, cfg.per_round)]
        healthy = HealthyStreams(target, pool, solo, cfg.healthy, protocols, hold=ctx.hold)
        await asyncio.sleep(lead)
        outs = []
        for f in group:
            t0 = time.perf_counter()
            try:
                out = await asyncio.wait_for(f.run(ctx), cfg.timeout_s)
            except TimeoutError:
                out = Outcome(f"no outcome within {cfg.timeout_s:g} s (hang)", False)
            except Exception as exc:  # noqa: BLE001 - the fault's client broke: reported
                out = Outcome(f"client error {type(exc).__name__}: {exc}"[:160], False)
            outs.append((f, out, time.perf_counter() - t0))
        summary = healthy.summary(await healthy.stop())
        alive = await healthy_server(target)
        for f, out, secs in outs:
            if not alive:
                out = Outcome(out.got + "; SERVER NOT ANSWERING /healthz", False)
            rows.append(row(f.name, f.expected, out, summary, secs))
            if progress_on:
                progress("faults", f"{f.name:28s} {'ok  ' if out.ok else 'FAIL'} {out.got[:90]}  "
                                   f"healthy {summary['intact']}/{summary['total']}")
        if not alive:
            break
    if cfg.drain and server is not None and (not cfg.only or any("sigterm".startswith(p)
                                                                  for p in cfg.only)):
        rows.append(await sigterm_drain(ctx, protocols, lead))
        if progress_on:
            progress("faults", f"sigterm-drain {rows[-1]['got']}")
    return rows


async def sigterm_drain(ctx: Ctx, protocols: tuple[str, ...], lead: float) -> dict[str, Any]:
    """SIGTERM while healthy streams speak: each gets the finals for its audio, then
    server_shutdown (1001) or UNAVAILABLE; the server exits 0."""
    assert ctx.server is not None
    healthy = HealthyStreams(ctx.target, ctx.pool, ctx.solo, ctx.cfg.healthy, protocols, loop=False)
    # every stream taken by the server (on a loaded machine a call can take longer to open
    # than `lead`: one that arrives after the signal is refused, not drained), then some audio
    admitted = await healthy.admitted(ctx.cfg.timeout_s)
    await asyncio.sleep(lead)
    t0 = time.perf_counter()
    ctx.server.sigterm()
    done = await healthy.stop()
    code = await asyncio.to_thread(ctx.server.proc.wait, 60)

    def drained(u: Any) -> bool:
        if u.protocol == "ws":
            return u.close_code == 1001 and (u.error or "").startswith("server_shutdown")
        return (u.error or "").startswith("UNAVAILABLE")

    good = sum(1 for u in done if drained(u) or (u.ended and u.finals == ctx.solo[u.index]))
    kinds = sorted({(u.error or "ended").split(":")[0] for u in done})
    out = Outcome(f"exit {code} after {time.perf_counter() - t0:.1f} s; healthy streams got "
                  f"{', '.join(kinds)}" + ("" if admitted else " (not all open at the signal)"),
                  code == 0 and admitted)
    return row("sigterm-drain", "exit 0; open streams: owed finals, then server_shutdown (1001) "
               "/ UNAVAILABLE", out, {"intact": good, "total": len(done),
                                      "examples": [describe(u, ctx.solo[u.index]) for u in done
                                                   if not drained(u)][:3]},
               time.perf_counter() - t0)


def run_faults(cfg: FaultsConfig, ws: str | None = None, grpc: str | None = None,
               api_key: str | None = None, manifest: Path | None = None,
               progress_on: bool = True) -> dict[str, Any]:
    pool = speech_pool(manifest, limit=max(2, cfg.healthy), seconds=cfg.healthy_seconds)
    target, server = target_or_server(cfg, "faults", STARTED, ws, grpc, api_key, progress_on)
    try:
        rows = asyncio.run(run_rounds(cfg, target, server, pool, progress_on))
    finally:
        if server is not None:
            server.stop()
    ran = [r for r in rows if not r["skipped"]]
    ok = all(r["ok"] and r["healthy_intact"] == r["healthy_total"] for r in ran)
    return {"config": dataclasses.asdict(cfg), "target": dataclasses.asdict(target) | {
                "api_key": "***" if target.api_key else None},
            "started": server is not None, "server_config": STARTED if server else None,
            "rows": rows, "ok": ok, "date": time.strftime("%Y-%m-%d")}


def markdown(result: dict[str, Any]) -> str:
    c = result["config"]
    where = ("a server this command started (" + json.dumps(result["server_config"]) + ")"
             if result["started"] else f"`{result['target']['ws_url']}` / `{result['target']['grpc']}`")
    lines = [f"Faults against {where}; {c['healthy']} healthy real-time streams "
             f"({', '.join(c['protocols'])}) beside each round of {c['per_round']} fault(s). "
             "Healthy intact: ended normally with the finals of its solo run.", "",
             "| fault | expected | what the faulty client got | ok | healthy streams intact |",
             "|---|---|---|---|---|"]
    for r in result["rows"]:
        ok = "skipped" if r["skipped"] else "yes" if r["ok"] else "**no**"
        healthy = "-" if r["healthy_total"] is None else f"{r['healthy_intact']}/{r['healthy_total']}"
        got = r["got"].replace("|", "\\|")
        lines.append(f"| {r['fault']} | {r['expected'].replace('|', '/')} | {got} | {ok} | {healthy} |")
    lines += ["", f"All faults as documented and every healthy stream intact: "
                  f"{'yes' if result['ok'] else '**no**'}"]
    return "\n".join(lines) + "\n"


def write(result: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    paths = write_report(out_dir, stem, result, markdown(result))
    return paths


__all__ = ["FaultsConfig", "run_faults", "markdown", "write", "catalogue", "FRAME_S"]
