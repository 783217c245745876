"""`chorus bench model`: how many real-time streams one CPU core carries for a bundle.

Per step the server runs the model on B streams' next chunk at once (Batch Dispatch) and, per
stream, the feature front end and the decoder. So the cost of one step with B streams is
    t(B) = t_model(B) + B * t_stream
measured here (1 thread, model step timed per batch size, front end + greedy decoder timed on
one stream). B streams are real time while t(B) <= chunk seconds; streams per core is the
largest such B. The sweep also reports audio seconds processed per CPU second at each B.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass(frozen=True)
class BenchConfig:
    threads: int = 1
    repeats: int = 5
    batches: tuple[int, ...] = BATCHES


def _median_seconds(fn: Any, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


@torch.no_grad()
def bench_model(bundle: Any, cfg: BenchConfig | None = None) -> dict[str, Any]:
    from models.decoding import bundle_decoder
    from models.features import Fbank, StreamingFbank

    cfg = cfg or BenchConfig()
    torch.set_num_threads(cfg.threads)
    model = bundle.model
    chunk = bundle.decoding.chunk_frames
    chunk_s = chunk * bundle.features.hop_ms / 1000
    frames = chunk + model.lookahead_frames
    rng = np.random.default_rng(0)

    # per-stream cost: features for one chunk of audio + greedy decoding of its outputs
    samples = (0.1 * rng.standard_normal(int(chunk_s * bundle.features.sample_rate))).astype(np.float32)
    fb = StreamingFbank(fbank=Fbank(bundle.features))
    dec = bundle_decoder(bundle, "greedy")
    out1, _ = model.step(torch.randn(1, frames, bundle.features.num_mel_bins), model.init_state(1))

    def per_stream() -> None:
        fb.accept(samples)
        dec.update(out1[0])

    t_stream = _median_seconds(per_stream, cfg.repeats * 4)
    rows = []
    for b in cfg.batches:
        x = torch.randn(b, frames, bundle.features.num_mel_bins)
        state = model.init_state(b)
        t_model = _median_seconds(lambda x=x, state=state: model.step(x, state), cfg.repeats)
        total = t_model + b * t_stream
        rows.append({"batch": b, "model_ms": round(1000 * t_model, 3),
                     "step_ms": round(1000 * total, 3),
                     "audio_s_per_cpu_s": round(b * chunk_s / total / cfg.threads, 1),
                     "real_time": total <= chunk_s})
        if total > 2 * chunk_s:
            break
    capacity = max((r["batch"] for r in rows if r["real_time"]), default=0)
    return {"bundle": str(bundle.path), "parameters": model.num_parameters(),
            "chunk_ms": round(1000 * chunk_s), "threads": cfg.threads,
            "per_stream_ms": round(1000 * t_stream, 4), "sweep": rows,
            "realtime_streams_per_core": capacity // cfg.threads if cfg.threads else capacity,
            "max_audio_s_per_cpu_s": max(r["audio_s_per_cpu_s"] for r in rows)}


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| bundle | params | chunk ms | real-time streams / core | peak audio-s per CPU-s |",
             "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['bundle']} | {r['parameters'] / 1e6:.2f} M | {r['chunk_ms']} | "
                     f"{r['realtime_streams_per_core']} | {r['max_audio_s_per_cpu_s']} |")
    return "\n".join(lines) + "\n"
