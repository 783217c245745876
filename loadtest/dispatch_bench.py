"""`chorus bench dispatch`: N real-time streams through Batch Dispatch, per policy and backend.

Each simulated stream plays real speech (a test manifest, or sentences synthesized on the spot)
in pieces of one model chunk (the bundle's `decoding.chunk_frames`, or `--chunk-ms` as if the
bundle said so), paced by the wall clock (piece k of a stream is due at its start offset + k x
chunk; offsets are spread over the first chunk so arrivals interleave), so every piece triggers
exactly one step. The streams are the server's own (`server.app.App.open` -> `Stream.feed`:
the Session's audio decoding, features, Batch Dispatch, decoding, endpointing and partials),
so the benchmark measures the production path minus the sockets. Latency of a piece = the
moment `feed` returns its events - the moment the piece was due. One event loop runs streams
and dispatcher (the backend step runs in the dispatcher's worker thread).

Reported per (policy, backend, N): p50/p95/p99 partial latency, mean batch size, real-time
factor (dispatcher compute seconds per audio second), CPU cores used (process CPU time / wall),
errors, and the roofline fraction: model FLOPs per audio second x N / the fp32 matmul peak of
this machine measured in the same run (same thread count). Capacity = the largest N whose p99
latency <= the target with no errors (a stream that falls behind real time shows up as a
growing latency).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import resource
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.harness import backend_spec, write_report
from loadtest.timing import across_runs, percentiles_ms
from server.dispatch import Overloaded, StreamError


@dataclass(frozen=True)
class BenchDispatchConfig:
    streams: tuple[int, ...] = (1, 8, 32, 64)
    policies: tuple[str, ...] = ("eager", "none")
    backends: tuple[str, ...] = ("onnxruntime", "torch")
    chunk_ms: int | None = None  # None: the bundle's chunk (decoding.chunk_frames), as served
    seconds: float = 20.0  # measured time per configuration (after a 2 s warm-up)
    threads: int = 1
    max_batch: int = 256
    latency_target_ms: float = 250.0
    decoder: str = "greedy"
    device: str = "cpu"  # cpu | cuda (torch; onnxruntime's CUDA provider where installed)
    repeats: int = 1  # runs per point: the row is their median, with min / max (spread)


# ---- model cost and machine peak -------------------------------------------------------------
def model_flops_per_audio_second(bundle: Any, chunk_frames: int) -> float:
    """Multiply-adds x 2 of one stream's steps per second of audio (chunk + lookahead recompute)."""
    from models.nn.subsampling import conv_out

    enc = bundle.model.cfg.encoder
    d, c, f = enc.d_model, enc.conv_channels, enc.num_mel_bins
    f1 = conv_out(f)
    f2 = conv_out(f1)
    v = bundle.tokenizer.vocab_size
    out_fps = 100 / enc.subsampling  # encoder frames per audio second
    per_out_frame = (
        2 * 9 * c * f1 * (enc.subsampling / 2)  # conv1 runs at 50 frames/s
        + 2 * 9 * c * c * f2  # conv2
        + 2 * c * f2 * d  # projection
        + enc.num_layers * 2 * 3 * d * (d + d)  # GRU (LSTM: 4 gates)
        * (4 / 3 if enc.rnn == "lstm" else 1)
    )
    tail = 2 * d * (enc.lookahead + 1) + 2 * d * v  # row conv + head, chunk frames only
    chunk_out = chunk_frames / enc.subsampling
    recompute = (chunk_out + enc.lookahead) / chunk_out  # lookahead frames run twice
    return out_fps * (per_out_frame * recompute + tail)


def matmul_peak_flops(threads: int, n: int = 1024, seconds: float = 1.0) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


# ---- audio -----------------------------------------------------------------------------------
def load_audio_pool(manifest: Path | None, limit: int = 40) -> list[np.ndarray]:
    if manifest is not None:
        from lhotse import CutSet

        return [c.load_audio()[0].astype(np.float32)
                for c in CutSet.from_file(manifest).subset(first=limit)]
    from models.audio import speak

    texts = ["turn on the kitchen lights and set the temperature to twenty one degrees",
             "what is the weather going to be like in paris tomorrow morning",
             "please call stella and ask her to bring these things with her from the store",
             "the meeting has been moved to thursday at three thirty in room two hundred",
             "read me the last message from my sister and remind me to answer it tonight"]
    return [speak(text, voice) for text in texts for voice in ("en-us", "en-gb+f3")]


# ---- one configuration -----------------------------------------------------------------------
class _StageClock:
    """Event-loop seconds spent in a session's input side (audio decoding, features, chunking)
    and output side (decoding, endpointing, events): the production Session's own methods,
    timed where they are called."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)

    def wrap(self, session: Any) -> None:
        for stage, name in (("features", "feed"), ("features", "finish"), ("decode", "on_output")):
            setattr(session, name, self._timed(stage, getattr(session, name)))

    def _timed(self, stage: str, fn: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - t0

        return call


async def _run_streams(bundle: Any, backend: str, policy: str, n: int, pool: list[np.ndarray],
                       cfg: BenchDispatchConfig) -> dict[str, Any]:
    """n paced streams through the server's own path: `App.open` -> `Stream.feed` (Session:
    audio bytes, features, chunking, Batch Dispatch, decoding, endpointing, partials)."""
    from server.app import App, ServerConfig
    from server.audio_in import AudioFormat

    chunk_s = bundle.decoding.chunk_frames / 100
    rate = bundle.features.sample_rate
    piece = int(chunk_s * rate)
    warmup = 2.0
    latencies: list[float] = []
    errors: list[str] = []
    clock = _StageClock()
    wait = [0.0]  # seconds the streams spent awaiting the dispatcher (queue + model step)
    lag = [0.0]
    name, int8 = backend_spec(backend)
    app = App(ServerConfig(backend=name, int8=int8, threads=cfg.threads,
                           policy=policy, device=cfg.device,
                           max_batch=cfg.max_batch, max_streams=n + 1, decoder=cfg.decoder,
                           max_wait_ms=chunk_s * 1000 / 4), bundle=bundle)
    disp = app.dispatcher
    await app.start()
    fmt = AudioFormat("pcm_f32le", rate, 1)
    try:
        start = time.perf_counter() + 0.2
        stop = start + warmup + cfg.seconds

        async def one(idx: int) -> None:
            rng = np.random.default_rng(idx)
            t_next = start + idx / n * chunk_s  # spread arrivals over one chunk
            while t_next < stop:
                audio = pool[int(rng.integers(len(pool)))]
                try:
                    stream = app.open(app.session_config(format=fmt))
                except Overloaded as exc:
                    errors.append(str(exc))
                    t_next += chunk_s
                    continue
                clock.wrap(stream.session)
                try:
                    for pos in range(0, audio.size, piece):
                        if t_next >= stop:
                            break
                        delay = t_next - time.perf_counter()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        data = audio[pos : pos + piece].astype("<f4").tobytes()
                        before = clock.seconds["features"] + clock.seconds["decode"]
                        t0 = time.perf_counter()
                        await stream.feed(data)
                        done = time.perf_counter()
                        spent = clock.seconds["features"] + clock.seconds["decode"] - before
                        wait[0] += max(0.0, done - t0 - spent)
                        if t_next >= start + warmup:
                            latencies.append(done - t_next)
                        lag[0] = max(lag[0], done - t_next)
                        t_next += chunk_s
                    await stream.finish()
                except (StreamError, Overloaded, ValueError) as exc:
                    errors.append(str(exc))
                    t_next += chunk_s
                finally:
                    stream.close()

        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        m0 = dataclasses.replace(disp.metrics)  # shallow: the counters we subtract are numbers
        await asyncio.gather(*(one(i) for i in range(n)))
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        await app.stop()
    wall = time.perf_counter() - start
    m = disp.metrics
    steps, chunks = m.steps - m0.steps, m.chunks - m0.chunks
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    audio_s = chunks * chunk_s
    return {
        "policy": policy, "streams": n,
        **percentiles_ms(latencies),
        "max_lag_ms": round(1000 * lag[0], 1),
        "mean_batch": round(chunks / steps, 2) if steps else 0.0,
        "rtf": round(m.compute_s / audio_s, 4) if audio_s else None,
        "cpu_cores": round(cpu / wall, 2), "errors": len(errors),
        "error_examples": errors[:3], "chunks": chunks,
        # where the time goes, ms per chunk: the session's input side (audio, features) and
        # output side (beam decoding, endpointing, events) on the event loop, the model step
        # (with greedy decoding, batched) in the dispatcher thread, and the streams' wait for
        # the dispatcher (queue + step)
        "ms_per_chunk": {
            "features": round(1000 * clock.seconds["features"] / max(chunks, 1), 3),
            "decode": round(1000 * clock.seconds["decode"] / max(chunks, 1), 3),
            "model_step": round(1000 * (m.compute_s - m0.compute_s) / max(steps, 1), 3),
            "dispatch_wait": round(1000 * wait[0] / max(chunks, 1), 3),
        },
    }


SPREAD_KEYS = ("p50_ms", "p95_ms", "p99_ms", "max_lag_ms", "mean_batch", "cpu_cores")


def _merge_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Repeated runs of one point -> one row: the median of each latency / batch / CPU figure
    with its min and max (loadtest.timing.across_runs), errors and chunks summed, the time
    breakdown averaged, each run kept under `runs`. One run is its own row."""
    if len(runs) == 1:
        return runs[0]
    stages = runs[0]["ms_per_chunk"]
    return {**runs[0], **across_runs(runs, SPREAD_KEYS),
            "rtf": round(float(np.mean([r["rtf"] or 0.0 for r in runs])), 4),
            "errors": sum(r["errors"] for r in runs),
            "error_examples": [e for r in runs for e in r["error_examples"]][:3],
            "chunks": sum(r["chunks"] for r in runs),
            "ms_per_chunk": {k: round(float(np.mean([r["ms_per_chunk"][k] for r in runs])), 3)
                             for k in stages},
            "runs": [{k: r[k] for k in (*SPREAD_KEYS, "errors", "chunks")} for r in runs]}


def run_benchmark(bundle_path: str | Path | None, cfg: BenchDispatchConfig,
                  manifest: Path | None = None, progress: bool = True,
                  pool: list[np.ndarray] | None = None) -> dict[str, Any]:
    """`pool`: the speech to play (16 kHz float32 clips) instead of `manifest`'s or espeak-ng's.
    On device cuda the roofline is not computed (the matmul peak measured is the CPU's)."""
    from models.bundle import load

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    bundle = load(bundle_path)
    frame_ms = 10 * bundle.model.subsampling
    if cfg.chunk_ms is not None:  # as if the bundle's decoding.chunk_frames said so
        if cfg.chunk_ms <= 0 or cfg.chunk_ms % frame_ms:
            raise ValueError(f"--chunk-ms must be a positive multiple of {frame_ms} (the model's "
                             f"output frame), got {cfg.chunk_ms}")
        bundle.decoding = dataclasses.replace(bundle.decoding, chunk_frames=cfg.chunk_ms // 10)
    cfg = dataclasses.replace(cfg, chunk_ms=bundle.decoding.chunk_frames * 10)
    if cfg.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {cfg.repeats}")
    if cfg.device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {cfg.device!r}")
    for backend in cfg.backends:  # every name checked before anything runs
        backend_spec(backend)
    pool = pool if pool is not None else load_audio_pool(manifest)
    peak = matmul_peak_flops(cfg.threads)
    flops = model_flops_per_audio_second(bundle, bundle.decoding.chunk_frames)
    rows = []
    for backend_name in cfg.backends:
        for policy in cfg.policies:
            for n in cfg.streams:
                row = _merge_runs([asyncio.run(_run_streams(bundle, backend_name, policy, n,
                                                            pool, cfg))
                                   for _ in range(cfg.repeats)])
                row["backend"] = backend_name
                row["roofline"] = round(flops * n / peak, 4) if cfg.device == "cpu" else None
                row["ok"] = (row["errors"] == 0 and row["p99_ms"] <= cfg.latency_target_ms)
                rows.append(row)
                if progress:
                    print(f"[bench] {backend_name:12s} {policy:7s} N={n:4d}  p50 {row['p50_ms']:7.1f} "
                          f"p99 {row['p99_ms']:7.1f} ms  batch {row['mean_batch']:6.2f}  "
                          f"cpu {row['cpu_cores']:.2f}  {'ok' if row['ok'] else 'FAIL'}", flush=True)
                if not row["ok"] and row["p99_ms"] > 4 * cfg.latency_target_ms:
                    break  # far past capacity: larger N only takes longer to say the same
    capacity: dict[str, dict[str, int]] = {}
    for r in rows:
        cap = capacity.setdefault(r["backend"], {}).setdefault(r["policy"], 0)
        if r["ok"]:
            capacity[r["backend"]][r["policy"]] = max(cap, r["streams"])
    return {"bundle": str(bundle.path), "parameters": bundle.model.num_parameters(),
            "config": dataclasses.asdict(cfg), "matmul_peak_gflops": round(peak / 1e9, 1),
            "model_mflops_per_audio_second": round(flops / 1e6, 1), "rows": rows,
            "capacity": capacity, "date": time.strftime("%Y-%m-%d")}


def markdown(result: dict[str, Any]) -> str:
    repeats = result["config"].get("repeats", 1)
    p99 = f"p99 ms (min-max), median of {repeats} runs" if repeats > 1 else "p99 ms"
    lines = [f"bundle {result['bundle']} ({result['parameters'] / 1e6:.2f} M params), "
             f"{result['model_mflops_per_audio_second']} MFLOP per audio second, matmul peak "
             f"{result['matmul_peak_gflops']} GFLOP/s ({result['config']['threads']} thread(s)), "
             f"chunk {result['config']['chunk_ms']} ms, target p99 <= "
             f"{result['config']['latency_target_ms']} ms", "",
             f"| backend | policy | streams | p50 ms | p95 ms | {p99} | mean batch | RTF "
             "| CPU cores | roofline | errors | ok |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        spread = f" ({r['p99_ms_min']}-{r['p99_ms_max']})" if "p99_ms_min" in r else ""
        lines.append(f"| {r['backend']} | {r['policy']} | {r['streams']} | {r['p50_ms']} | "
                     f"{r['p95_ms']} | {r['p99_ms']}{spread} | {r['mean_batch']} | {r['rtf']} | "
                     f"{r['cpu_cores']} | {_percent(r['roofline'])} | {r['errors']} | "
                     f"{'yes' if r['ok'] else 'no'} |")
    lines += ["", "Where the time goes (ms per chunk; on the event loop: the session's input "
              "side (audio bytes, chunking; features of log-mel bundles are computed in the "
              "dispatcher thread) and output side (reading results, endpointing, events); in "
              "the dispatcher thread, once per batch: features, the model step and decoding, "
              "batched):", "",
              "| backend | policy | streams | features | decode | model step (per batch) | "
              "dispatch wait |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        t = r["ms_per_chunk"]
        lines.append(f"| {r['backend']} | {r['policy']} | {r['streams']} | {t['features']} | "
                     f"{t['decode']} | {t['model_step']} | {t['dispatch_wait']} |")
    lines += ["", "| backend | " + " | ".join(f"capacity ({p})" for p in result["config"]["policies"])
              + " | ratio |", "|---|" + "---|" * (len(result["config"]["policies"]) + 1)]
    for be, caps in result["capacity"].items():
        vals = [caps.get(p, 0) for p in result["config"]["policies"]]
        ratio = f"{vals[0] / vals[-1]:.1f}x" if len(vals) > 1 and vals[-1] else "-"
        lines.append(f"| {be} | " + " | ".join(str(v) for v in vals) + f" | {ratio} |")
    return "\n".join(lines) + "\n"


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for be in result["config"]["backends"]:
        for policy in result["config"]["policies"]:
            rows = [r for r in result["rows"] if r["backend"] == be and r["policy"] == policy]
            if rows:
                ax.plot([r["streams"] for r in rows], [r["p99_ms"] for r in rows], marker="o",
                        label=f"{policy} ({be})")
    ax.axhline(result["config"]["latency_target_ms"], color="gray", ls="--", label="target")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent real-time streams")
    ax.set_ylabel("p99 partial latency (ms)")
    ax.set_title("Batch Dispatch: eager batching vs batch size 1")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(result: dict[str, Any], out_dir: Path, stem: str = "dispatch") -> list[Path]:
    paths = write_report(out_dir, stem, result, markdown(result)) + [out_dir / f"{stem}.png"]
    plot(result, paths[2])
    return paths
