"""`chorus loadtest fuzz`: generated hostile traffic over real sockets, a healthy stream beside.

From one seed, cases are generated until they hold `messages` messages, each case one
connection: WebSocket sequences (random and mutated JSON control messages, random text, random
binary frames, audio in each encoding with random framing, truncated and corrupted WAV headers,
and misused protocol orders: audio before start, start twice, stop twice, audio after stop,
resume with junk) and gRPC calls (native and Riva streaming with random configs, audio and
resume requests; unary Recognize). After its sequence a WebSocket case sends `stop` if the
connection is still open, and every case must then end (a close, a status) within
`timeout_s`: one that neither answers nor closes is a hang. Every `check_every` cases the
server must answer /healthz (and, when this command started it, still run): otherwise a
crash. Reported: close codes, error codes and gRPC statuses (histograms), internal errors
(WebSocket 1011 / `internal`, gRPC INTERNAL), hangs, crashes, text frames from the server
that are not strict JSON, and whether the healthy stream kept its solo transcript. The run
passes with 0 internal, 0 hangs, 0 crashes, 0 non-JSON answers and the healthy stream intact.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import struct
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.faults import WAV_DATA_FIRST, riva_pb, wav_header
from loadtest.harness import (
    HealthyStreams,
    ServerProcess,
    Target,
    healthy_server,
    native_pb,
    progress,
    solo_finals,
    speech_pool,
    target_or_server,
    write_report,
)
from loadtest.timing import FRAME_BYTES

STARTED: dict[str, Any] = {
    "max_streams": 512, "resume_window_s": 2.0,
    "limits": {"idle_timeout_s": 5.0, "max_frame_bytes": 65536, "max_stream_s": 60.0},
}
ENCODINGS = ("pcm_s16le", "pcm_f32le", "mulaw", "wav")


@dataclass(frozen=True)
class FuzzConfig:
    messages: int = 1000
    seed: int = 0
    concurrency: int = 8  # connections at a time
    timeout_s: float = 15.0  # a case that neither answers nor ends within this is a hang
    grpc_share: float = 0.25  # of the cases, when the server has a gRPC port
    healthy: int = 1
    healthy_seconds: float | None = None
    check_every: int = 50  # cases between /healthz checks
    max_frame_bytes: int = 1 << 20  # a --ws server's limits.max_frame_bytes
    bundle: str | None = None
    backend: str = "onnxruntime"
    threads: int = 1
    decoder: str | None = None


@dataclass
class Case:
    index: int
    kind: str
    protocol: str  # ws | grpc | riva | unary
    actions: list[Any]  # ws: str / bytes / ("text", bytes); grpc: requests (or (config, audio))

    @property
    def messages(self) -> int:
        return len(self.actions) if self.protocol != "unary" else 1

    def summary(self) -> str:
        def one(a: Any) -> str:
            if isinstance(a, bytes):
                return f"<{len(a)} bytes {a[:12]!r}>"
            if isinstance(a, tuple):
                return f"<text frame {a[1][:20]!r}>"
            return repr(a)[:120]
        return f"#{self.index} {self.protocol} {self.kind}: " + ", ".join(one(a) for a in self.actions[:6])


@dataclass
class Seen:
    outcome: str  # "ws:1007", "grpc:INVALID_ARGUMENT", ...
    error_code: str | None = None
    hang: bool = False
    internal: bool = False
    non_json: int = 0  # text frames from the server that are not strict JSON
    sent: int = 0
    detail: str = ""


# ---- generators -------------------------------------------------------------------------------
class Gen:
    """Random messages from one seeded generator (the same seed gives the same cases)."""

    def __init__(self, seed: int, pool: list[bytes], max_frame: int):
        self.r = random.Random(seed)
        self.pool = pool
        self.max_frame = max_frame

    def pick(self, seq: Any) -> Any:
        return seq[self.r.randrange(len(seq))]

    # JSON-ish values
    def text(self, n: int = 12) -> str:
        alphabet = "abcdefghijklmnopqrstuvwxyz \"'\\{}[]:,.-_0123456789éß漢\u0000\u202e\U0001f600"
        return "".join(self.pick(alphabet) for _ in range(self.r.randrange(n + 1)))

    def number(self) -> Any:
        return self.pick([0, -1, 1, 2, 7999, 8000, 16000, 22050, 48000, 48001, 10**7, -10**9,
                          2**31, 2**63, 10**30, 0.5, 16000.0, -0.0, 1e308, 1e-300,
                          float("nan"), float("inf"), self.r.randint(-10**6, 10**6),
                          self.r.uniform(-1e6, 1e6)])

    def value(self, depth: int = 0) -> Any:
        k = self.r.randrange(9 if depth < 3 else 5)
        if k == 0:
            return None
        if k == 1:
            return self.r.random() < 0.5
        if k == 2:
            return self.number()
        if k in (3, 4):
            return self.pick(["start", "stop", "resume", "pcm_s16le", "wav", "mulaw", "greedy",
                              "beam", "", "false", "true", "0", self.text()])
        if k in (5, 6):
            return [self.value(depth + 1) for _ in range(self.r.randrange(4))]
        return {self.pick(["type", "format", "token", "offset", "phrase", "boost", self.text(6)]):
                self.value(depth + 1) for _ in range(self.r.randrange(4))}

    def start(self, valid: bool) -> dict[str, Any]:
        enc = self.pick(ENCODINGS)
        msg: dict[str, Any] = {
            "type": "start",
            "format": {"encoding": enc, "sample_rate": self.pick([8000, 16000, 22050, 44100, 48000]),
                       "channels": self.pick([1, 1, 2])},
            "interim_results": self.r.random() < 0.7, "continuous": self.r.random() < 0.5,
            "max_alternatives": self.pick([1, 1, 2, 3]), "decoder": self.pick([None, "greedy", "beam"]),
            "hotwords": self.pick([[], [], ["hello"], [{"phrase": "turn on", "boost": 2.0}]])}
        for name in list(msg)[1:]:
            if self.r.random() < 0.4:
                del msg[name]
        if not valid:
            for _ in range(self.r.randint(1, 3)):
                where = self.r.randrange(4)
                if where == 0:
                    msg[self.pick(["format", "interim_results", "continuous", "max_alternatives",
                                   "decoder", "hotwords", "type", self.text(5)])] = self.value()
                elif where == 1:
                    fmt = msg.setdefault("format", {})
                    if isinstance(fmt, dict):
                        fmt[self.pick(["encoding", "sample_rate", "channels", self.text(4)])] = \
                            self.value()
                elif where == 2:
                    msg["hotwords"] = [self.pick([self.text(), {"phrase": self.value(),
                                                                "boost": self.number()},
                                                  self.value()]) for _ in range(self.r.randrange(3))]
                elif msg:
                    msg.pop(self.pick(list(msg)), None)
        return msg

    def dumps(self, msg: Any) -> str:
        try:
            return json.dumps(msg)
        except (ValueError, TypeError):
            return '{"type": "start"}'

    def raw_text(self) -> Any:
        k = self.r.randrange(8)
        if k == 0:
            return self.text(40)
        if k == 1:
            return self.dumps(self.value())
        if k == 2:
            whole = self.dumps(self.start(True))
            return whole[: self.r.randrange(len(whole))]  # truncated JSON
        if k == 3:
            d = self.r.randint(50, 5000)
            return self.pick(["[", '{"a":']) * d + self.pick(["]", "}"]) * d
        if k == 4:
            return '{"type": "start", "max_alternatives": ' + "7" * self.r.randint(4000, 6000) + "}"
        if k == 5:
            return ("text", bytes(self.r.randrange(256) for _ in range(self.r.randrange(1, 30))))
        if k == 6:
            return self.pick(['{"type": "stop"}', '{"type": "start"}', '{"type": null}',
                              '{"type": ["start"]}', '{"type": {"start": 1}}', "NaN", "-Infinity",
                              '{"type": "stop", "type": "start"}', "[]", '""', "1e999"])
        return self.dumps({"type": self.pick(["start", "stop", "resume", "pause", self.text(5)]),
                           self.text(4): self.value()})

    def random_bytes(self) -> bytes:
        n = self.pick([0, 1, 2, 3, 4, 5, 7, 8, 63, 64, 100, 320, 1000, 3200, 4096, 6401,
                       self.r.randrange(1, 9000)])
        if self.r.random() < 0.02:
            n = self.max_frame + self.r.randint(1, 10)
        elif self.r.random() < 0.005:
            n = 2 * self.max_frame + self.r.randint(1, 10)
        return self.r.randbytes(n)

    def audio(self, enc: str) -> bytes:
        """A frame in (or near) the encoding: real speech, noise, odd lengths, extreme floats."""
        k = self.r.randrange(5)
        if k == 0:
            return self.random_bytes()
        if enc == "pcm_f32le":
            vals = [self.pick([0.0, 0.5, -1.0, 1.5, 1e30, -3.4e38, 1e-40, float("nan"),
                               float("inf"), self.r.uniform(-1, 1)]) if self.r.random() < 0.3
                    else self.r.uniform(-1, 1) for _ in range(self.r.randrange(1, 1600))]
            return struct.pack(f"<{len(vals)}f", *vals)
        pcm = self.pick(self.pool)
        i = self.r.randrange(0, max(1, len(pcm) - FRAME_BYTES)) & ~1
        return pcm[i : i + self.pick([2, 320, 3200, 6400])]

    def wav_bytes(self) -> bytes:
        k = self.r.randrange(6)
        if k == 0:
            head = wav_header(tag=self.pick([1, 3, 7, 0xFFFE, 2, 0]), channels=self.pick([0, 1, 2, 9]),
                              rate=self.pick([0, 8000, 16000, 96000, 2**32 - 1]),
                              bits=self.pick([8, 16, 24, 32, 0]),
                              fmt_size=self.pick([0, 4, 14, 16, 18, 40]))
        elif k == 1:
            head = WAV_DATA_FIRST
        elif k == 2:
            head = b"RIFF" + self.r.randbytes(4) + b"WAVE" + self.pick([b"LIST", b"fact", b"junk"]) + \
                struct.pack("<I", self.pick([0, 1, 2**31, 2**32 - 1, 70000])) + self.r.randbytes(8)
        else:
            head = bytearray(wav_header(data_size=self.pick([0, 3200, 2**32 - 1])))
            for _ in range(self.r.randint(1, 4)):
                head[self.r.randrange(len(head))] = self.r.randrange(256)
            head = bytes(head)
        if self.r.random() < 0.3:
            head = head[: self.r.randrange(len(head) + 1)]
        return head + self.audio("pcm_s16le")

    # sequences
    def ws_case(self, index: int) -> Case:
        kind = self.pick(["random_text", "binary_first", "start_audio", "start_audio", "mutated_start",
                          "double_start", "stop_twice", "audio_after_stop", "resume_junk",
                          "wav_corrupt", "interleave"])
        s = lambda valid=True: self.dumps(self.start(valid))  # noqa: E731
        stop = '{"type": "stop"}'
        acts: list[Any]
        if kind == "random_text":
            acts = [self.raw_text() for _ in range(self.r.randint(1, 3))]
        elif kind == "binary_first":
            acts = [self.random_bytes(), *([s()] if self.r.random() < 0.5 else [])]
        elif kind in ("start_audio", "mutated_start"):
            msg = self.start(kind == "start_audio")
            fmt = msg.get("format") if isinstance(msg.get("format"), dict) else {}
            enc = fmt.get("encoding", "pcm_s16le") if isinstance(fmt.get("encoding"), str) else "x"
            acts = [self.dumps(msg)]
            acts += [self.wav_bytes() if enc == "wav" and i == 0 else self.audio(enc)
                     for i in range(self.r.randint(0, 6))]
            if self.r.random() < 0.6:
                acts.append(stop)
        elif kind == "double_start":
            acts = [s(), *([self.audio("pcm_s16le")] if self.r.random() < 0.5 else []), s()]
        elif kind == "stop_twice":
            acts = [s(), self.audio("pcm_s16le"), stop, stop]
        elif kind == "audio_after_stop":
            acts = [s(), stop, self.audio("pcm_s16le")]
        elif kind == "resume_junk":
            acts = [self.dumps({"type": "resume", "token": self.pick([self.text(), "", None, 5,
                                                                      "x" * 200, self.value()]),
                                "offset": self.pick([0, -1, 1.5, "0", None, 2**70, 3]),
                                "finals": self.pick([0, -1, True, None, 10**9])})]
            acts += self.pick([[], [stop], [self.random_bytes()], [s()]])
        elif kind == "wav_corrupt":
            acts = [self.dumps({"type": "start", "format": {"encoding": "wav"}}), self.wav_bytes()]
            acts += [self.audio("pcm_s16le") for _ in range(self.r.randint(0, 2))] + [stop]
        else:
            acts = [self.pick([s(), s(False), stop, self.raw_text(), self.random_bytes(),
                               self.audio("pcm_s16le")]) for _ in range(self.r.randint(3, 8))]
        return Case(index, kind, "ws", acts)

    def native_config(self) -> Any:
        pb, _ = native_pb()
        hot = [pb.Hotword(phrase=self.text(8), boost=self.pick([0.0, 1.0, 20.0, 21.0, -1.0,
                                                                float("nan"), float("inf"), 1e30]))
               for _ in range(self.pick([0, 0, 0, 1, 2]))]
        return pb.RecognitionConfig(
            format=pb.AudioFormat(encoding=self.pick([0, 1, 1, 2, 3, 4, 5, 99, -1]),
                                  sample_rate_hertz=self.pick([0, -1, 8000, 16000, 16000, 22050,
                                                               48001, 2**31 - 1]),
                                  channels=self.pick([0, 1, 1, 2, 9, -1])),
            max_alternatives=self.pick([0, 1, 3, 11, -1]), decoder=self.pick(["", "", "greedy",
                                                                               "beam", "viterbi"]),
            hotwords=hot)

    def grpc_case(self, index: int) -> Case:
        pb, _ = native_pb()
        kind = self.pick(["native_stream", "native_stream", "native_resume", "riva_stream", "unary"])
        if kind == "unary":
            return Case(index, kind, "unary", [self.native_config(),
                                               self.pick([self.random_bytes(), self.wav_bytes(),
                                                          self.audio("pcm_s16le")])])
        if kind == "riva_stream":
            rasr, _ = riva_pb()
            ctx = [rasr.SpeechContext(phrases=[self.text(6)], boost=self.pick([1.0, -5.0, 0.0, 1e9,
                                                                               float("nan")]))
                   for _ in range(self.pick([0, 0, 1]))]
            cfg = rasr.RecognitionConfig(
                encoding=self.pick([0, 1, 1, 2, 3, 4, 5, 99]),
                sample_rate_hertz=self.pick([0, 8000, 16000, 44100, 96000, -5]),
                language_code=self.pick(["", "en-US", "en", "de-DE", self.text(5)]),
                audio_channel_count=self.pick([0, 1, 2, 9]), max_alternatives=self.pick([0, 1, 5, 50]),
                speech_contexts=ctx)
            reqs = [rasr.StreamingRecognizeRequest(streaming_config=rasr.StreamingRecognitionConfig(
                config=cfg, interim_results=self.r.random() < 0.5))]
            reqs += [rasr.StreamingRecognizeRequest(audio_content=self.pick(
                [self.audio("pcm_s16le"), self.wav_bytes(), self.random_bytes()]))
                for _ in range(self.r.randint(0, 4))]
            if self.r.random() < 0.2:
                reqs.insert(self.r.randrange(len(reqs) + 1), reqs[0])
            return Case(index, kind, "riva", reqs)
        first = (pb.StreamingRecognizeRequest(resume=pb.ResumeRequest(
                    token=self.pick([self.text(), "", "x" * 300]),
                    offset=self.pick([0, 1, 2**63, 2**64 - 1]), finals=self.pick([0, 7, 2**32 - 1])))
                 if kind == "native_resume" else
                 pb.StreamingRecognizeRequest(streaming_config=pb.StreamingConfig(
                     config=self.native_config(), interim_results=self.r.random() < 0.5,
                     continuous=self.r.random() < 0.5)))
        reqs = [first] if self.r.random() < 0.9 else []
        for _ in range(self.r.randint(0, 5)):
            reqs.append(self.pick([pb.StreamingRecognizeRequest(audio=self.audio("pcm_s16le")),
                                   pb.StreamingRecognizeRequest(audio=self.random_bytes()),
                                   pb.StreamingRecognizeRequest(audio=self.wav_bytes()), first]))
        return Case(index, kind, "grpc", reqs)


def generate(cfg: FuzzConfig, pool: list[bytes], max_frame: int, grpc: bool) -> list[Case]:
    gen = Gen(cfg.seed, pool, max_frame)
    cases: list[Case] = []
    total = 0
    while total < cfg.messages:
        i = len(cases)
        case = gen.grpc_case(i) if grpc and gen.r.random() < cfg.grpc_share else gen.ws_case(i)
        cases.append(case)
        total += max(1, case.messages)
    return cases


# ---- running a case ---------------------------------------------------------------------------
def strict_json(raw: str) -> Any:
    """json.loads that refuses NaN / Infinity (not JSON: a browser's JSON.parse fails on them)."""
    def refuse(name: str) -> Any:
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(raw, parse_constant=refuse)


async def run_ws(target: Target, case: Case, timeout: float) -> Seen:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    seen = Seen("ws:?")
    try:
        async with connect(target.ws_url, additional_headers=target.ws_headers(), max_size=None,
                           open_timeout=timeout, close_timeout=5, proxy=None) as ws:

            async def reader() -> None:
                async for raw in ws:
                    if isinstance(raw, bytes):
                        seen.non_json += 1
                        continue
                    try:
                        msg = strict_json(raw)
                    except ValueError:
                        seen.non_json += 1
                        seen.detail = f"server sent non-JSON text: {raw[:120]!r}"
                        continue
                    if isinstance(msg, dict) and msg.get("type") == "error":
                        seen.error_code = msg.get("code")
                        if seen.error_code == "internal":
                            seen.detail = str(msg.get("message"))[:200]

            task = asyncio.ensure_future(reader())
            try:
                for a in case.actions:
                    if task.done():
                        break
                    if isinstance(a, tuple):
                        await ws.send(a[1], text=True)
                    else:
                        await ws.send(a)
                    seen.sent += 1
                if not task.done():
                    await ws.send('{"type": "stop"}')
            except ConnectionClosed:
                pass
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                seen.hang = True
                seen.detail = "no close within the timeout"
                task.cancel()
            except ConnectionClosed:
                pass
            code = ws.close_code
        seen.outcome = f"ws:{code if code is not None else 'abnormal'}"
    except InvalidStatus as exc:
        seen.outcome = f"ws:HTTP {exc.response.status_code}"
    except (OSError, TimeoutError) as exc:
        seen.outcome = f"ws:{type(exc).__name__}"
        seen.hang = isinstance(exc, TimeoutError)
    seen.internal = seen.outcome == "ws:1011" or seen.error_code == "internal"
    return seen


def run_grpc_sync(channel: Any, case: Case, timeout: float, metadata: tuple[Any, ...]) -> Seen:
    """One gRPC case on a shared blocking channel (the blocking client reports the server's
    status even when the server ended the call while requests were being written)."""
    import grpc

    pb, pb_grpc = native_pb()
    seen = Seen("grpc:OK", sent=case.messages)
    try:
        if case.protocol == "unary":
            pb_grpc.AsrStub(channel).Recognize(pb.RecognizeRequest(
                config=case.actions[0], audio=case.actions[1]), metadata=metadata, timeout=timeout)
        else:
            stub = (riva_pb()[1].RivaSpeechRecognitionStub(channel) if case.protocol == "riva"
                    else pb_grpc.AsrStub(channel))
            for _ in stub.StreamingRecognize(iter(case.actions), metadata=metadata, timeout=timeout):
                pass
    except grpc.RpcError as exc:
        code, details = exc.code().name, exc.details() or ""
        seen.outcome = f"grpc:{code}"
        seen.hang = code == "DEADLINE_EXCEEDED" and details == "Deadline Exceeded"
        seen.internal = code in ("INTERNAL", "UNKNOWN")
        if seen.internal or seen.hang:
            seen.detail = details[:200]
    return seen


# ---- the run ------------------------------------------------------------------------------------
async def fuzz(cfg: FuzzConfig, cases: list[Case], target: Target, server: ServerProcess | None,
               pool: list[bytes], progress_on: bool) -> dict[str, Any]:
    import grpc

    solo = await solo_finals(target, pool)
    healthy = HealthyStreams(target, pool, solo, cfg.healthy, ("ws",))
    sem = asyncio.Semaphore(cfg.concurrency)
    channel = grpc.insecure_channel(target.grpc) if target.grpc else None
    results: list[tuple[Case, Seen]] = []
    crashes: list[str] = []
    t0 = time.perf_counter()

    async def one(case: Case) -> None:
        async with sem:
            if crashes:
                return
            if case.protocol == "ws":
                seen = await run_ws(target, case, cfg.timeout_s)
            else:
                seen = await asyncio.to_thread(run_grpc_sync, channel, case, cfg.timeout_s,
                                               target.grpc_metadata())
            results.append((case, seen))
            n = len(results)
            if n % cfg.check_every == 0:
                if not await healthy_server(target, timeout=10) or (server and not server.alive()):
                    crashes.append(f"after {n} cases: /healthz did not answer"
                                   + ("" if server is None or server.alive() else
                                      f" (server exited {server.proc.returncode})"))
                if progress_on:
                    bad = sum(1 for _, s in results if s.internal or s.hang)
                    progress("fuzz", f"{n}/{len(cases)} cases, "
                                     f"{sum(s.sent for _, s in results)} messages, "
                                     f"{bad} internal/hang, {time.perf_counter() - t0:.0f} s")

    try:
        await asyncio.gather(*(one(c) for c in cases))
    finally:
        if channel is not None:
            channel.close()
    done = await healthy.stop()
    if not crashes and (not await healthy_server(target, timeout=10)
                        or (server is not None and not server.alive())):
        crashes.append("at the end: /healthz did not answer")
    outcomes = Counter(s.outcome for _, s in results)
    errors = Counter(s.error_code for _, s in results if s.error_code)
    internal = [(c, s) for c, s in results if s.internal]
    hangs = [(c, s) for c, s in results if s.hang]
    non_json = [(c, s) for c, s in results if s.non_json]
    h = healthy.summary(done)
    ok = not internal and not hangs and not crashes and not non_json and h["intact"] == h["total"]
    return {
        "config": dataclasses.asdict(cfg), "started": server is not None,
        "server_config": STARTED if server is not None else None,
        "cases": len(results), "messages": sum(s.sent for _, s in results),
        "seconds": round(time.perf_counter() - t0, 1),
        "by_kind": dict(Counter(c.kind for c, _ in results).most_common()),
        "outcomes": dict(sorted(outcomes.items())), "error_codes": dict(sorted(errors.items())),
        "internal": len(internal), "hangs": len(hangs), "crashes": crashes,
        "non_json": len(non_json),
        "examples": {"internal": [f"{c.summary()} -> {s.detail}" for c, s in internal[:5]],
                     "hangs": [f"{c.summary()} -> {s.detail}" for c, s in hangs[:5]],
                     "non_json": [f"{c.summary()} -> {s.detail}" for c, s in non_json[:5]]},
        "healthy": h, "ok": ok, "date": time.strftime("%Y-%m-%d")}


def run_fuzz(cfg: FuzzConfig, ws: str | None = None, grpc: str | None = None,
             api_key: str | None = None, manifest: Path | None = None,
             progress_on: bool = True) -> dict[str, Any]:
    pool = speech_pool(manifest, limit=max(2, cfg.healthy), seconds=cfg.healthy_seconds)
    max_frame = STARTED["limits"]["max_frame_bytes"] if ws is None else cfg.max_frame_bytes
    cases = generate(cfg, pool, max_frame, ws is None or grpc is not None)
    target, server = target_or_server(cfg, "fuzz", STARTED, ws, grpc, api_key, progress_on)
    try:
        return asyncio.run(fuzz(cfg, cases, target, server, pool, progress_on))
    finally:
        if server is not None:
            server.stop()


def markdown(r: dict[str, Any]) -> str:
    c = r["config"]
    h = r["healthy"]
    lines = [f"Fuzz: seed {c['seed']}, {r['messages']} messages in {r['cases']} connections "
             f"({c['concurrency']} at a time, {r['seconds']} s), a hang = no close / status within "
             f"{c['timeout_s']:g} s.", "",
             "| internal (1011 / INTERNAL) | hangs | crashes | non-JSON answers | healthy intact | ok |",
             "|---|---|---|---|---|---|",
             f"| {r['internal']} | {r['hangs']} | {len(r['crashes'])} | {r['non_json']} | "
             f"{h['intact']}/{h['total']} | {'yes' if r['ok'] else '**no**'} |", "",
             "| outcome (WebSocket close code / gRPC status) | cases |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in r["outcomes"].items()]
    lines += ["", "| error code (WebSocket) | cases |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in r["error_codes"].items()]
    lines += ["", "| case kind | cases |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in r["by_kind"].items()]
    for what in ("internal", "hangs", "non_json"):
        for e in r["examples"][what]:
            lines.append(f"\n{what}: `{e}`")
    for e in r["crashes"]:
        lines.append(f"\ncrash: {e}")
    return "\n".join(lines) + "\n"


def write(result: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    paths = write_report(out_dir, stem, result, markdown(result))
    return paths


__all__ = ["FuzzConfig", "run_fuzz", "markdown", "write", "generate"]
