"""`chorus loadtest capacity`: how many real-time streams the real server carries.

For each policy it starts `chorus serve` (or targets --url/--grpc of a running one), then ramps
N concurrent streams of real speech paced in real time (100 ms frames) over WebSocket or gRPC
(native API) for `seconds` each. Partial latency = arrival of a partial - the moment the frame
that completed its audio was sent (partials carry `audio_processed`). Final latency = the final
after the end of audio. Capacity = the largest N with p99 partial latency <= target and no
errors. Clients and server share this machine: the client side's CPU is part of the load
(reported as measured CPU of both processes).

Writes JSON, a markdown table and a PNG plot (p50/p99 partial latency vs streams per policy).
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loadtest import harness
from loadtest.harness import free_port

__all__ = ["free_port", "ServerProcess", "CapacityConfig", "run_capacity"]
FRAME_S = 0.1
RATE = 16_000


@dataclass(frozen=True)
class CapacityConfig:
    protocol: str = "ws"  # ws | grpc
    policies: tuple[str, ...] = ("eager", "none")
    streams: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    seconds: float = 15.0
    target_ms: float = 250.0
    backend: str = "onnxruntime"
    bundle: str | None = None
    threads: int = 1
    decoder: str | None = None  # None: the served bundle's default


class ServerProcess(harness.ServerProcess):
    """`chorus serve` for one policy, with room for every ramp step (4096 streams)."""

    def __init__(self, cfg: CapacityConfig, policy: str):
        super().__init__(bundle=cfg.bundle, backend=cfg.backend, threads=cfg.threads,
                         decoder=cfg.decoder, policy=policy, prefix="chorus-capacity-",
                         extra=["--max-streams", "4096", "--max-batch", "256"])


class Recorder:
    def __init__(self) -> None:
        self.partial: list[float] = []
        self.final: list[float] = []
        self.errors: list[str] = []


async def ws_stream(url: str, pcm: bytes, start: float, stop: float, rec: Recorder) -> None:
    from websockets.asyncio.client import connect

    step = int(RATE * FRAME_S) * 2
    sent_at: list[tuple[float, float]] = []  # (audio seconds sent, wall time)
    try:
        async with connect(url, max_size=None) as ws:
            await ws.send(json.dumps({"type": "start", "continuous": True}))
            json.loads(await ws.recv())

            async def reader() -> None:
                async for raw in ws:
                    msg = json.loads(raw)
                    now = time.perf_counter()
                    if msg["type"] == "partial" and now >= start:
                        k = bisect.bisect_left([a for a, _ in sent_at], msg["audio_processed"] - 1e-6)
                        if k < len(sent_at):
                            rec.partial.append(now - sent_at[k][1])
                    elif msg["type"] == "error":
                        rec.errors.append(msg["code"])
                    elif msg["type"] == "end":
                        rec.final.append(now - sent_at[-1][1] if sent_at else 0.0)
                        return

            task = asyncio.create_task(reader())
            t0 = time.perf_counter()
            k = 0
            while True:
                t_next = t0 + k * FRAME_S
                if t_next >= stop:
                    break
                await asyncio.sleep(max(0.0, t_next - time.perf_counter()))
                i = (k * step) % len(pcm)
                await ws.send(pcm[i : i + step])
                sent_at.append(((k + 1) * FRAME_S, time.perf_counter()))
                k += 1
            await ws.send(json.dumps({"type": "stop"}))
            await asyncio.wait_for(task, 60)
    except Exception as exc:  # noqa: BLE001 - counted, reported
        rec.errors.append(f"{type(exc).__name__}: {exc}")


async def grpc_stream(addr: str, pcm: bytes, start: float, stop: float, rec: Recorder) -> None:
    import grpc

    from server.grpc_codegen import generated

    pb, pb_grpc = generated()
    step = int(RATE * FRAME_S) * 2
    sent_at: list[tuple[float, float]] = []
    cfg = pb.RecognitionConfig(format=pb.AudioFormat(encoding=pb.PCM_S16LE, sample_rate_hertz=RATE))

    async def requests() -> Any:
        yield pb.StreamingRecognizeRequest(streaming_config=pb.StreamingConfig(
            config=cfg, interim_results=True, continuous=True))
        t0 = time.perf_counter()
        k = 0
        while t0 + k * FRAME_S < stop:
            await asyncio.sleep(max(0.0, t0 + k * FRAME_S - time.perf_counter()))
            i = (k * step) % len(pcm)
            yield pb.StreamingRecognizeRequest(audio=pcm[i : i + step])
            sent_at.append(((k + 1) * FRAME_S, time.perf_counter()))
            k += 1

    try:
        async with grpc.aio.insecure_channel(addr) as ch:
            stub = pb_grpc.AsrStub(ch)
            async for resp in stub.StreamingRecognize(requests(), wait_for_ready=True):
                now = time.perf_counter()
                for r in resp.results:
                    if not r.is_final and now >= start:
                        k = bisect.bisect_left([a for a, _ in sent_at], r.audio_processed - 1e-6)
                        if k < len(sent_at):
                            rec.partial.append(now - sent_at[k][1])
            rec.final.append(time.perf_counter() - sent_at[-1][1] if sent_at else 0.0)
    except grpc.aio.AioRpcError as exc:
        rec.errors.append(f"{exc.code().name}: {exc.details()}")
    except Exception as exc:  # noqa: BLE001
        rec.errors.append(f"{type(exc).__name__}: {exc}")


async def run_point(server: ServerProcess, cfg: CapacityConfig, n: int, pool: list[bytes]) -> dict[str, Any]:
    rec = Recorder()
    warm = 2.0
    t_begin = time.perf_counter()
    start, stop = t_begin + warm, t_begin + warm + cfg.seconds
    cpu0 = server.cpu_seconds()
    own0 = time.process_time()
    if cfg.protocol == "ws":
        url = f"ws://127.0.0.1:{server.ws_port}/v1/stream"
        coros = [ws_stream(url, pool[i % len(pool)], start, stop, rec) for i in range(n)]
    else:
        addr = f"127.0.0.1:{server.grpc_port}"
        coros = [grpc_stream(addr, pool[i % len(pool)], start, stop, rec) for i in range(n)]

    async def staggered(i: int, c: Any) -> None:
        await asyncio.sleep(i / n * FRAME_S)
        await c

    await asyncio.gather(*(staggered(i, c) for i, c in enumerate(coros)))
    wall = time.perf_counter() - t_begin
    lat = np.asarray(rec.partial or [np.nan]) * 1000
    fin = np.asarray(rec.final or [np.nan]) * 1000
    return {"streams": n, "partials": len(rec.partial),
            "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p95_ms": round(float(np.percentile(lat, 95)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1),
            "final_p50_ms": round(float(np.percentile(fin, 50)), 1),
            "final_p99_ms": round(float(np.percentile(fin, 99)), 1),
            "errors": len(rec.errors), "error_examples": rec.errors[:3],
            "server_cpu_cores": round((server.cpu_seconds() - cpu0) / wall, 2),
            "client_cpu_cores": round((time.process_time() - own0) / wall, 2)}


def audio_pool(manifest: Path | None) -> list[bytes]:
    from models.audio import to_pcm16
    from server.bench import load_audio_pool

    return [to_pcm16(a) for a in load_audio_pool(manifest, limit=20)]


def run_capacity(cfg: CapacityConfig, manifest: Path | None = None, progress: bool = True) -> dict[str, Any]:
    pool = audio_pool(manifest)
    rows = []
    for policy in cfg.policies:
        server = ServerProcess(cfg, policy)
        try:
            for n in cfg.streams:
                row = {"policy": policy, **asyncio.run(run_point(server, cfg, n, pool))}
                row["ok"] = row["errors"] == 0 and row["p99_ms"] <= cfg.target_ms
                rows.append(row)
                if progress:
                    print(f"[capacity] {cfg.protocol} {policy:6s} N={n:4d} p50 {row['p50_ms']:7.1f} "
                          f"p99 {row['p99_ms']:7.1f} ms  errors {row['errors']}  server cpu "
                          f"{row['server_cpu_cores']}  {'ok' if row['ok'] else 'FAIL'}"
                          + (f"  e.g. {row['error_examples'][0]}" if row["errors"] else ""),
                          flush=True)
                if not row["ok"] and (row["errors"] or row["p99_ms"] > 4 * cfg.target_ms):
                    break
        finally:
            server.stop()
    capacity = {p: max([r["streams"] for r in rows if r["policy"] == p and r["ok"]], default=0)
                for p in cfg.policies}
    return {"config": dataclasses.asdict(cfg), "rows": rows, "capacity": capacity,
            "date": time.strftime("%Y-%m-%d")}


def markdown(result: dict[str, Any]) -> str:
    c = result["config"]
    lines = [f"protocol {c['protocol']}, backend {c['backend']}, {c['seconds']} s per point, "
             f"target p99 partial latency <= {c['target_ms']} ms", "",
             "| policy | streams | partials | p50 ms | p95 ms | p99 ms | final p50 ms | final p99 ms "
             "| errors | server CPU cores | client CPU cores | ok |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['policy']} | {r['streams']} | {r['partials']} | {r['p50_ms']} | "
                     f"{r['p95_ms']} | {r['p99_ms']} | {r['final_p50_ms']} | {r['final_p99_ms']} | "
                     f"{r['errors']} | {r['server_cpu_cores']} | {r['client_cpu_cores']} | "
                     f"{'yes' if r['ok'] else 'no'} |")
    caps = result["capacity"]
    lines += ["", "| " + " | ".join(f"capacity ({p})" for p in caps) + " | ratio |",
              "|" + "---|" * (len(caps) + 1)]
    vals = list(caps.values())
    ratio = f"{vals[0] / vals[-1]:.1f}x" if len(vals) > 1 and vals[-1] else "-"
    lines.append("| " + " | ".join(str(v) for v in vals) + f" | {ratio} |")
    return "\n".join(lines) + "\n"


def write(result: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md", out_dir / f"{stem}.png"]
    paths[0].write_text(json.dumps(result, indent=1) + "\n")
    paths[1].write_text(markdown(result))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for policy in result["config"]["policies"]:
        rows = [r for r in result["rows"] if r["policy"] == policy]
        for key, style in (("p50_ms", "--"), ("p99_ms", "-")):
            ax.plot([r["streams"] for r in rows], [r[key] for r in rows], style, marker="o",
                    label=f"{policy} {key[:3]}")
    ax.axhline(result["config"]["target_ms"], color="gray", ls=":", label="target")
    ax.set_xscale("log", base=2)
    if any(r["p50_ms"] > 0 for r in result["rows"]):  # NaN-only (all failed) cannot log-scale
        ax.set_yscale("log")
    ax.set_xlabel("concurrent real-time streams")
    ax.set_ylabel("partial latency (ms)")
    ax.set_title(f"End-to-end capacity over {result['config']['protocol']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(paths[2], dpi=120)
    plt.close(fig)
    return paths
