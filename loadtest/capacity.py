"""`chorus loadtest capacity`: how many real-time streams the real server carries.

For each policy it starts `chorus serve`, then, for each load point N, runs N concurrent
streams of real speech over WebSocket or gRPC (native API; each stream on its own connection,
as separate clients are: with `--workers` the kernel spreads connections, not calls), each
paced in real time in 100 ms frames with exact audio accounting (loadtest/timing.py: samples,
not frames; a file's short last frame counts what it holds). Streams start and stop
independently: each starts at an offset drawn uniformly over `spread_s` (seeded; a second or
more covers any chunk period, so chunk boundaries do not line up across streams) and stops at
its own offset after the measured window. The window is `seconds` long and begins `warm_s` (at
least `spread_s`) after the first start, so all N streams run through it.

Partial latency = arrival of a partial - send time of the frame that completed the audio it
reports (`audio_processed`), for partials whose frame was sent in the window; the partials of
each stream's end (its last frame and the flush that `stop` / the half-close triggers) are
reported apart. Final latency = the end of the stream (WebSocket `end`, gRPC status) after
`stop`. The server's own time per partial (`processing_latency_ms`) is summarised beside it.
Each point runs `repeats` times (new offsets each); a row gives the median of the runs and
their min / max. Capacity = the largest N whose median p99 partial latency <= target with no
errors in any run. Clients and server share this machine: both CPU figures are reported.

Writes JSON, a markdown table and a PNG plot (p50/p99 partial latency vs streams per policy).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest import harness
from loadtest.harness import free_port, pcm_config, speech_pool, write_report
from loadtest.timing import SendLog, across_runs, looped, paced, percentiles_ms

__all__ = ["free_port", "ServerProcess", "CapacityConfig", "run_capacity", "markdown", "write"]
# summarised across the repeats of a point: median, min, max
SPREAD_KEYS = ("p50_ms", "p95_ms", "p99_ms", "end_p50_ms", "end_p99_ms", "final_p50_ms",
               "final_p99_ms", "server_p50_ms", "server_p99_ms", "server_cpu_cores",
               "client_cpu_cores")


@dataclass(frozen=True)
class CapacityConfig:
    protocol: str = "ws"  # ws | grpc
    policies: tuple[str, ...] = ("eager", "none")
    streams: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    seconds: float = 15.0  # the measured window of each run
    target_ms: float = 250.0
    backend: str = "onnxruntime"
    bundle: str | None = None
    threads: int = 1
    decoder: str | None = None  # None: the served bundle's default
    repeats: int = 3  # runs per load point
    spread_s: float = 1.0  # start and stop offsets: uniform over this many seconds
    warm_s: float = 2.0  # first start -> the window (at least spread_s)
    seed: int = 0
    workers: tuple[int, ...] = (1,)  # serving processes (chorus serve --workers), each a server

    def servers(self) -> list[tuple[str, str, int]]:
        """(label, policy, workers) of every server measured: the label is the policy, with
        the worker count when it is not 1 (e.g. "eager x2")."""
        return [(p if w == 1 else f"{p} x{w}", p, w) for w in self.workers for p in self.policies]


class ServerProcess(harness.ServerProcess):
    """`chorus serve` for one policy, with room for every ramp step (4096 streams)."""

    def __init__(self, cfg: CapacityConfig, policy: str, workers: int = 1):
        super().__init__(bundle=cfg.bundle, backend=cfg.backend, threads=cfg.threads,
                         decoder=cfg.decoder, policy=policy, prefix="chorus-capacity-",
                         extra=["--max-streams", "4096", "--max-batch", "256"], workers=workers)


@dataclass
class Schedule:
    """One run of a point: when each stream starts and stops (perf_counter times) and the
    measured window."""

    starts: list[float]
    stops: list[float]
    window: tuple[float, float]

    @classmethod
    def draw(cls, cfg: CapacityConfig, n: int, t0: float, rng: random.Random) -> Schedule:
        begin = t0 + max(cfg.warm_s, cfg.spread_s)
        end = begin + cfg.seconds
        return cls([t0 + rng.uniform(0, cfg.spread_s) for _ in range(n)],
                   [end + rng.uniform(0, cfg.spread_s) for _ in range(n)], (begin, end))


@dataclass
class StreamRun:
    log: SendLog = field(default_factory=SendLog)
    final_s: float | None = None  # stop -> the end of the stream
    error: str | None = None


async def ws_stream(url: str, pcm: bytes, start: float, stop: float) -> StreamRun:
    from websockets.asyncio.client import connect

    run = StreamRun()
    log = run.log
    await asyncio.sleep(max(0.0, start - time.perf_counter()))
    try:
        async with connect(url, max_size=None) as ws:
            await ws.send(json.dumps({"type": "start", "continuous": True}))
            json.loads(await ws.recv())

            async def reader() -> None:
                async for raw in ws:
                    msg = json.loads(raw)
                    if msg["type"] == "partial":
                        log.partial(msg["audio_processed"], msg.get("processing_latency_ms", 0.0))
                    elif msg["type"] == "error":
                        run.error = msg["code"]
                    elif msg["type"] == "end":
                        run.final_s = log.since_stop()
                        return

            task = asyncio.create_task(reader())
            async for f in paced(looped(pcm), log, until=stop):
                await ws.send(f)
            log.stop()
            await ws.send(json.dumps({"type": "stop"}))
            await asyncio.wait_for(task, 60)
    except Exception as exc:  # noqa: BLE001 - counted, reported
        run.error = run.error or f"{type(exc).__name__}: {exc}"
    return run


async def grpc_stream(addr: str, pcm: bytes, start: float, stop: float) -> StreamRun:
    import grpc

    from server.grpc_codegen import generated

    pb, pb_grpc = generated()
    run = StreamRun()
    log = run.log

    async def requests() -> Any:
        yield pb.StreamingRecognizeRequest(streaming_config=pcm_config(pb))
        async for f in paced(looped(pcm), log, until=stop):
            yield pb.StreamingRecognizeRequest(audio=f)
        log.stop()  # the half-close

    await asyncio.sleep(max(0.0, start - time.perf_counter()))
    try:
        # each stream its own connection, as separate clients have (channels to one target
        # otherwise share one: every call would reach the same server worker)
        async with grpc.aio.insecure_channel(
                addr, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            stub = pb_grpc.AsrStub(ch)
            async for resp in stub.StreamingRecognize(requests(), wait_for_ready=True):
                for r in resp.results:
                    if not r.is_final:
                        log.partial(r.audio_processed, r.processing_latency_ms)
            run.final_s = log.since_stop()
    except grpc.aio.AioRpcError as exc:
        run.error = f"{exc.code().name}: {exc.details()}"
    except Exception as exc:  # noqa: BLE001
        run.error = f"{type(exc).__name__}: {exc}"
    return run


def summarize(runs: list[StreamRun], window: tuple[float, float]) -> dict[str, Any]:
    """One run of a point: partial latency (real-time, in the window), end-of-stream partials,
    finals, the server's processing time of the real-time partials, errors."""
    realtime: list[float] = []
    end: list[float] = []
    server: list[float] = []
    unmatched = 0
    for r in runs:
        lat = r.log.latencies(window)
        realtime += lat.realtime
        end += lat.end
        server += [r.log.server_ms[i] / 1000 for i in lat.picked]
        unmatched += lat.unmatched
    errors = [r.error for r in runs if r.error]
    return {"partials": len(realtime), **percentiles_ms(realtime),
            "end_partials": len(end), **percentiles_ms(end, "end_", (50, 99)),
            **percentiles_ms([r.final_s for r in runs if r.final_s is not None], "final_", (50, 99)),
            **percentiles_ms(server, "server_", (50, 99)),
            "unmatched": unmatched, "errors": len(errors), "error_examples": errors[:3]}


async def run_point(server: ServerProcess, cfg: CapacityConfig, n: int, pool: list[bytes],
                    rng: random.Random) -> dict[str, Any]:
    t_begin = time.perf_counter()
    plan = Schedule.draw(cfg, n, t_begin + 0.05, rng)
    cpu0 = server.cpu_seconds()
    own0 = time.process_time()
    if cfg.protocol == "ws":
        url = f"ws://127.0.0.1:{server.ws_port}/v1/stream"
        coros = [ws_stream(url, pool[i % len(pool)], plan.starts[i], plan.stops[i]) for i in range(n)]
    else:
        addr = f"127.0.0.1:{server.grpc_port}"
        coros = [grpc_stream(addr, pool[i % len(pool)], plan.starts[i], plan.stops[i])
                 for i in range(n)]
    runs = await asyncio.gather(*coros)
    wall = time.perf_counter() - t_begin
    return {**summarize(list(runs), plan.window),
            "server_cpu_cores": round((server.cpu_seconds() - cpu0) / wall, 2),
            "client_cpu_cores": round((time.process_time() - own0) / wall, 2)}


def point_row(policy: str, n: int, runs: list[dict[str, Any]], target_ms: float) -> dict[str, Any]:
    """The repeats of one point: medians with their min / max, counts summed over the runs."""
    row: dict[str, Any] = {"policy": policy, "streams": n, "repeats": len(runs),
                           **across_runs(runs, SPREAD_KEYS)}
    for k in ("partials", "end_partials", "unmatched", "errors"):
        row[k] = sum(r[k] for r in runs)
    row["error_examples"] = [e for r in runs for e in r["error_examples"]][:3]
    row["ok"] = row["errors"] == 0 and row["p99_ms"] <= target_ms
    row["runs"] = runs
    return row


def run_capacity(cfg: CapacityConfig, manifest: Path | None = None, progress: bool = True) -> dict[str, Any]:
    pool = speech_pool(manifest, limit=20)
    rows = []
    for label, policy, workers in cfg.servers():
        server = ServerProcess(cfg, policy, workers)
        try:
            for n in cfg.streams:
                runs = [asyncio.run(run_point(server, cfg, n, pool,
                                              random.Random(f"{cfg.seed}-{n}-{k}")))
                        for k in range(max(1, cfg.repeats))]
                row = point_row(label, n, runs, cfg.target_ms)
                rows.append(row)
                if progress:
                    print(f"[capacity] {cfg.protocol} {label:9s} N={n:4d} x{row['repeats']} p50 "
                          f"{row['p50_ms']:7.1f} p99 {row['p99_ms']:7.1f} ms (runs "
                          f"{row['p99_ms_min']:.1f}-{row['p99_ms_max']:.1f})  errors "
                          f"{row['errors']}  server cpu {row['server_cpu_cores']}  "
                          f"{'ok' if row['ok'] else 'FAIL'}"
                          + (f"  e.g. {row['error_examples'][0]}" if row["errors"] else ""),
                          flush=True)
                if not row["ok"] and (row["errors"] or row["p99_ms"] > 4 * cfg.target_ms):
                    break
        finally:
            server.stop()
    capacity = {p: max([r["streams"] for r in rows if r["policy"] == p and r["ok"]], default=0)
                for p, _, _ in cfg.servers()}
    return {"config": dataclasses.asdict(cfg), "rows": rows, "capacity": capacity,
            "date": time.strftime("%Y-%m-%d")}


def _spread(r: dict[str, Any], key: str) -> str:
    """A median with the range of the runs, when there were several."""
    if r.get("repeats", 1) < 2:
        return f"{r[key]}"
    return f"{r[key]} ({r[key + '_min']}-{r[key + '_max']})"


def markdown(result: dict[str, Any]) -> str:
    c = result["config"]
    lines = [f"protocol {c['protocol']}, backend {c['backend']}, {c['seconds']} s window per run, "
             f"{c['repeats']} run(s) per point (median, min-max of the runs), start / stop "
             f"offsets over {c['spread_s']} s, target p99 partial latency <= {c['target_ms']} ms; "
             "end: the partials of each stream's end (reported apart); server: processing_"
             "latency_ms of the real-time partials", "",
             "| policy | streams | partials | p50 ms | p95 ms | p99 ms | end partials | end p99 ms "
             "| final p50 ms | final p99 ms | server p50 ms | server p99 ms | errors | unmatched "
             "| server CPU cores | client CPU cores | ok |",
             "|" + "---|" * 17]
    for r in result["rows"]:
        lines.append(f"| {r['policy']} | {r['streams']} | {r['partials']} | {_spread(r, 'p50_ms')} | "
                     f"{r['p95_ms']} | {_spread(r, 'p99_ms')} | {r['end_partials']} | "
                     f"{r['end_p99_ms']} | {r['final_p50_ms']} | {r['final_p99_ms']} | "
                     f"{r['server_p50_ms']} | {r['server_p99_ms']} | {r['errors']} | "
                     f"{r['unmatched']} | {r['server_cpu_cores']} | {r['client_cpu_cores']} | "
                     f"{'yes' if r['ok'] else 'no'} |")
    caps = result["capacity"]
    base = caps.get("none")  # batch size 1, one process: what each server is compared with
    lines += ["", "| server | capacity | ratio to none (batch size 1, one process) |",
              "|---|---|---|"]
    for label, cap in caps.items():
        lines.append(f"| {label} | {cap} | {f'{cap / base:.1f}x' if base else '-'} |")
    return "\n".join(lines) + "\n"


def write(result: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = write_report(out_dir, stem, result, markdown(result))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for policy in dict.fromkeys(r["policy"] for r in result["rows"]):  # each server, in order
        rows = [r for r in result["rows"] if r["policy"] == policy]
        for key, style in (("p50_ms", "--"), ("p99_ms", "-")):
            y = [r[key] for r in rows]
            err = [[v - r.get(f"{key}_min", v) for v, r in zip(y, rows, strict=True)],
                   [r.get(f"{key}_max", v) - v for v, r in zip(y, rows, strict=True)]]
            ax.errorbar([r["streams"] for r in rows], y, yerr=err, fmt=style, marker="o",
                        capsize=3, label=f"{policy} {key[:3]}")
    ax.axhline(result["config"]["target_ms"], color="gray", ls=":", label="target")
    ax.set_xscale("log", base=2)
    if any(r["p50_ms"] > 0 for r in result["rows"]):  # NaN-only (all failed) cannot log-scale
        ax.set_yscale("log")
    ax.set_xlabel("concurrent real-time streams")
    ax.set_ylabel("partial latency (ms): median of runs, bars min-max")
    ax.set_title(f"End-to-end capacity over {result['config']['protocol']}")
    ax.legend()
    fig.tight_layout()
    paths.append(out_dir / f"{stem}.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths
