"""`chorus loadtest soak`: a long run at a fraction of capacity, the server's resources sampled.

`load` x capacity real-time streams (capacity given in streams, or read from a `chorus
loadtest capacity` JSON) run for `minutes`, each a loop of real speech utterances, one per
connection (a reconnect after each), so connections, sessions and streams are made and torn
down all the time. Every `sample_s` the server process is sampled: resident memory, open file
descriptors and OS threads (psutil on its PID: the server this command started, or --pid),
Python threads and the tasks alive on its event loop (its /metrics gauges `chorus_threads`,
`chorus_asyncio_tasks`, `process_resident_memory_bytes`, `process_open_fds`), and its open
streams. Counted: utterances, errors, finals expected (those of the utterance's solo run)
against finals received (lost = the shortfall), transcripts that differ from the solo run.
Growth: the mean of each resource over the first window (a minute, or a third of a short run;
the first seconds, while streams connect, left out) against the last, and a least-squares
slope per minute; after the load stops, the open streams
must return to 0 and the event-loop tasks to their idle count. JSON + markdown (+ PNG).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.harness import (
    HealthyStreams,
    ServerProcess,
    Target,
    progress,
    scrape,
    solo_finals,
    speech_pool,
    write_report,
)

RESOURCES = ("rss_mb", "fds", "threads", "py_threads", "asyncio_tasks", "open_streams")


@dataclass(frozen=True)
class SoakConfig:
    minutes: float = 10.0
    load: float = 0.8  # fraction of capacity
    capacity: int | None = None  # streams; None: from capacity_json
    capacity_json: str | None = None  # a `chorus loadtest capacity` result
    policy: str = "eager"  # its capacity of this policy
    protocols: tuple[str, ...] = ("ws", "grpc")
    sample_s: float = 5.0
    window_s: float = 60.0  # growth: first vs last window
    utterance_seconds: float | None = None  # cut each utterance to this (None: whole)
    pid: int | None = None  # a --ws server's PID, for psutil
    bundle: str | None = None
    backend: str = "onnxruntime"
    threads: int = 1
    decoder: str | None = None
    workers: int = 1  # serving processes of the server this command starts

    def streams(self) -> int:
        cap = self.capacity
        if cap is None:
            if self.capacity_json is None:
                raise ValueError("give the capacity (--capacity STREAMS) or --capacity-json FILE")
            cap = int(json.loads(Path(self.capacity_json).read_text())["capacity"][self.policy])
        return max(1, round(self.load * cap))


def server_total(m: dict[str, float], name: str) -> float:
    """A per-process metric of the scraped server: its value, or, from a server of several
    workers (whose /metrics labels such families by `worker`), their sum; NaN when absent."""
    if name in m:
        return m[name]
    per_worker = [v for k, v in m.items() if k.startswith(name + "{") and 'worker="' in k]
    return float(sum(per_worker)) if per_worker else float("nan")


class Sampler:
    """The server's resources now: psutil on its PID and every process under it (a server of
    several workers is a supervisor and its children) when the PID is known, its /metrics
    gauges (per worker, summed). Summed RSS counts pages the processes share once per process:
    an upper bound of the memory, whose growth is what the soak watches."""

    def __init__(self, target: Target, pid: int | None):
        self.target = target
        self.proc = None
        if pid is not None:
            import psutil

            self.proc = psutil.Process(pid)

    async def sample(self, t: float) -> dict[str, float]:
        m = await scrape(self.target)
        row = {"t_s": round(t, 2),
               "rss_mb": server_total(m, "process_resident_memory_bytes") / 2**20,
               "fds": server_total(m, "process_open_fds"),
               "threads": float("nan"),
               "py_threads": server_total(m, "chorus_threads"),
               "asyncio_tasks": server_total(m, "chorus_asyncio_tasks"),
               "open_streams": m.get("chorus_open_streams", float("nan")),
               "processes": float("nan")}
        if self.proc is not None:
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                rss = fds = threads = 0.0
                for p in procs:
                    with p.oneshot():
                        rss += p.memory_info().rss / 2**20
                        fds += p.num_fds()
                        threads += p.num_threads()
                row.update(rss_mb=rss, fds=fds, threads=threads, processes=float(len(procs)))
            except Exception:  # noqa: BLE001 - a process is gone: the samples say so (NaN)
                pass
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()}


def growth(samples: list[dict[str, float]], window_s: float,
           skip_s: float = 0.0) -> dict[str, dict[str, float]]:
    """Per resource: mean over the first and the last window, their difference, slope/min;
    samples of the first `skip_s` (the streams connecting) are left out."""
    samples = [s for s in samples if s["t_s"] >= skip_s] or samples[-1:]
    if not samples:
        return {}
    t = np.array([s["t_s"] for s in samples])
    w = min(window_s, (t[-1] - t[0]) / 3) if len(t) > 1 else 0.0
    first, last = t <= t[0] + w, t >= t[-1] - w
    out = {}
    for name in RESOURCES:
        v = np.array([s[name] for s in samples], dtype=float)
        ok = np.isfinite(v)
        if not ok.any():
            continue
        a, b = np.nanmean(v[first & ok]) if (first & ok).any() else np.nan, \
            np.nanmean(v[last & ok]) if (last & ok).any() else np.nan
        slope = float(np.polyfit(t[ok] / 60, v[ok], 1)[0]) if ok.sum() > 2 and np.ptp(t[ok]) > 0 \
            else float("nan")
        out[name] = {"first": round(float(a), 2), "last": round(float(b), 2),
                     "growth": round(float(b - a), 2), "per_minute": round(slope, 3)}
    return out


async def soak(cfg: SoakConfig, target: Target, pid: int | None, pool: list[bytes],
               progress_on: bool) -> dict[str, Any]:
    n = cfg.streams()
    solo = await solo_finals(target, pool)
    sampler = Sampler(target, pid)
    await asyncio.sleep(0.5)  # let the solo runs' connections wind down
    idle = await sampler.sample(0.0)  # before the load: the idle baseline
    protocols = tuple(p for p in cfg.protocols if p == "ws" or target.grpc)
    t0 = time.perf_counter()
    healthy = HealthyStreams(target, pool, solo, n, protocols)
    samples: list[dict[str, Any]] = []
    duration = cfg.minutes * 60

    def tally() -> dict[str, int]:
        done = list(healthy.done)
        expected = sum(len(solo[u.index]) for u in done)
        received = sum(min(len(u.finals), len(solo[u.index])) for u in done)
        return {"utterances": len(done), "errors": sum(1 for u in done if u.error),
                "finals_expected": expected, "finals_received": received,
                "finals_lost": expected - received,
                "mismatched": sum(1 for u in done if not u.error and u.finals != solo[u.index])}

    await asyncio.sleep(min(cfg.sample_s, duration))
    while (elapsed := time.perf_counter() - t0) < duration:
        row = {**await sampler.sample(elapsed), **tally()}
        samples.append(row)
        if progress_on:
            progress("soak", f"{elapsed / 60:5.2f}/{cfg.minutes:g} min  streams {n}  "
                             f"utterances {row['utterances']}  errors {row['errors']}  lost "
                             f"{row['finals_lost']}  rss {row['rss_mb']:.0f} MB  fds {row['fds']:.0f}  "
                             f"threads {row['threads']:.0f}  tasks {row['asyncio_tasks']:.0f}  "
                             f"open {row['open_streams']:.0f}")
        await asyncio.sleep(min(cfg.sample_s, max(0.0, duration - (time.perf_counter() - t0))))
    samples.append({**await sampler.sample(time.perf_counter() - t0), **tally()})
    done = await healthy.stop()  # the utterances under way finish
    after = None
    for _ in range(50):  # the load is gone: streams and tasks back to idle
        after = await sampler.sample(time.perf_counter() - t0)
        if after["open_streams"] == 0 and after["asyncio_tasks"] <= idle["asyncio_tasks"]:
            break
        await asyncio.sleep(0.2)
    counts = {"utterances": len(done), "errors": sum(1 for u in done if u.error)}
    expected = sum(len(solo[u.index]) for u in done)
    received = sum(min(len(u.finals), len(solo[u.index])) for u in done)
    errors: dict[str, int] = {}
    for u in done:
        if u.error:
            kind = u.error.split(":")[0]
            errors[kind] = errors.get(kind, 0) + 1
    return {"config": dataclasses.asdict(cfg), "streams": n, "protocols": list(protocols),
            "seconds": round(time.perf_counter() - t0, 1), **counts,
            "error_kinds": errors, "finals_expected": expected, "finals_received": received,
            "finals_lost": expected - received,
            "mismatched": sum(1 for u in done if not u.error and u.finals != solo[u.index]),
            "idle": idle, "after": after, "samples": samples,
            "growth": growth(samples, cfg.window_s, skip_s=min(10.0, duration / 10)),
            "examples": healthy.summary(done)["examples"], "date": time.strftime("%Y-%m-%d")}


def run_soak(cfg: SoakConfig, ws: str | None = None, grpc: str | None = None,
             api_key: str | None = None, manifest: Path | None = None,
             progress_on: bool = True) -> dict[str, Any]:
    n = cfg.streams()
    pool = speech_pool(manifest, limit=10, seconds=cfg.utterance_seconds)
    server = None
    if ws is None:
        config = {"max_streams": max(64, 2 * n)}
        if progress_on:
            progress("soak", f"starting chorus serve ({json.dumps(config)}) for {n} streams")
        server = ServerProcess(bundle=cfg.bundle, backend=cfg.backend, threads=cfg.threads,
                               decoder=cfg.decoder, config=config, prefix="chorus-soak-",
                               workers=cfg.workers)
        target, pid = server.target(), server.pid
    else:
        target, pid = Target(ws, grpc, api_key), cfg.pid
    try:
        result = asyncio.run(soak(cfg, target, pid, pool, progress_on))
    finally:
        code = server.stop() if server is not None else None
    result["started"] = server is not None
    result["exit_code"] = code
    after = result["after"] or {}
    result["ok"] = (result["errors"] == 0 and result["finals_lost"] == 0 and result["mismatched"] == 0
                    and after.get("open_streams") == 0 and (code in (None, 0)))
    return result


def markdown(r: dict[str, Any]) -> str:
    c = r["config"]
    open_after = (r["after"] or {}).get("open_streams", float("nan"))
    lines = [f"Soak: {r['streams']} real-time streams ({', '.join(r['protocols'])}; load {c['load']:g} "
             f"of capacity), {r['seconds'] / 60:.1f} min, a new connection per utterance.", "",
             "| utterances | errors | finals expected | finals received | finals lost | "
             "transcripts differing from solo | open streams after | ok |",
             "|---|---|---|---|---|---|---|---|",
             f"| {r['utterances']} | {r['errors']} | {r['finals_expected']} | {r['finals_received']} | "
             f"{r['finals_lost']} | {r['mismatched']} | {open_after:g} | "
             f"{'yes' if r['ok'] else '**no**'} |", "",
             "| resource | idle | first window | last window | growth | per minute | after |",
             "|---|---|---|---|---|---|---|"]
    for name, g in r["growth"].items():
        lines.append(f"| {name} | {r['idle'].get(name)} | {g['first']} | {g['last']} | {g['growth']} | "
                     f"{g['per_minute']} | {(r['after'] or {}).get(name)} |")
    if r["error_kinds"]:
        lines += ["", "errors: " + ", ".join(f"{k} x{v}" for k, v in r["error_kinds"].items())]
    for e in r["examples"]:
        lines.append(f"\n`{e}`")
    return "\n".join(lines) + "\n"


def write(result: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    paths = write_report(out_dir, stem, result, markdown(result))
    try:
        import matplotlib
    except ImportError:
        return paths
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    t = [s["t_s"] / 60 for s in samples]
    fig, axes = plt.subplots(2, 2, figsize=(9, 6), sharex=True)
    for ax, (keys, label) in zip(axes.flat, [(("rss_mb",), "resident memory (MB)"),
                                             (("fds",), "open file descriptors"),
                                             (("threads", "py_threads"), "threads (OS, Python)"),
                                             (("asyncio_tasks", "open_streams"),
                                              "event-loop tasks, open streams")], strict=True):
        for k in keys:
            ax.plot(t, [s[k] for s in samples], marker=".", label=k)
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    for ax in axes[1]:
        ax.set_xlabel("minutes")
    fig.suptitle(f"Soak: {result['streams']} streams, {result['seconds'] / 60:.1f} min")
    fig.tight_layout()
    paths.append(out_dir / f"{stem}.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


__all__ = ["SoakConfig", "run_soak", "markdown", "write", "growth"]
