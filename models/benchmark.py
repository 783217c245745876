"""`chorus bench model`: how many real-time streams one CPU core carries for a bundle.

Per step the server runs the model on B streams' next chunk at once (Batch Dispatch) and, per
stream, the feature front end and the decoder. So the cost of one step with B streams is
    t(B) = t_model(B) + B * t_stream
measured here (1 thread, model step timed per batch size, front end + decoder timed on one
stream). B streams are real time while t(B) <= chunk seconds; streams per core is the largest
such B. The sweep also reports audio seconds processed per CPU second at each B.

Decoders: greedy is timed on the model's outputs for noise (its cost hardly depends on them);
beam search with the bundle's LM (`decoder="beam"`) is timed over the outputs of real speech,
a sentence spoken by espeak-ng, chunk by chunk (averaged per chunk), since a beam's and an
LM's work grow with the words the model hears.
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
    decoder: str = "greedy"  # or "beam" (the bundle's beam size and LM, on real speech)


SPEECH = ("please set an alarm for seven thirty tomorrow morning and remind me to call "
          "the office about the meeting on thursday")


def speech_outputs(bundle: Any) -> list[torch.Tensor]:
    """The model's outputs, chunk by chunk, for SPEECH spoken by espeak-ng (one stream)."""
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    from models.audio import load_audio
    from models.streaming import Chunker

    if not shutil.which("espeak-ng"):
        raise RuntimeError("chorus bench model --decoder beam speaks a sentence with espeak-ng, "
                           "which is not installed: run `make system` (Debian package espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), SPEECH], check=True)
        audio = load_audio(wav, sample_rate=bundle.features.sample_rate)
    chunker = Chunker(bundle)
    state = bundle.model.init_state(1)
    outs: list[torch.Tensor] = []
    for frames in [*chunker.accept(audio), *chunker.finish()]:
        out, state = bundle.model.step(frames[None], state)
        outs.append(out[0])
    return outs


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
    if cfg.decoder == "beam":
        chunks = speech_outputs(bundle)  # (T'_chunk, V) each

        def decode_all() -> None:
            dec = bundle_decoder(bundle, "beam", beam_size=bundle.decoding.beam_size,
                                 lm=bundle.lm)
            for out in chunks:
                dec.update(out)
                dec.result()  # a partial per chunk, as the server sends
            dec.finalize()

        t_decode = _median_seconds(decode_all, cfg.repeats) / len(chunks)
        t_front = _median_seconds(lambda: fb.accept(samples), cfg.repeats * 4)
        t_stream = t_front + t_decode
    else:
        dec = bundle_decoder(bundle, "greedy")
        out1, _ = model.step(torch.randn(1, frames, bundle.features.num_mel_bins),
                             model.init_state(1))

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
            "decoder": cfg.decoder, "chunk_ms": round(1000 * chunk_s), "threads": cfg.threads,
            "per_stream_ms": round(1000 * t_stream, 4), "sweep": rows,
            "realtime_streams_per_core": capacity // cfg.threads if cfg.threads else capacity,
            "max_audio_s_per_cpu_s": max(r["audio_s_per_cpu_s"] for r in rows)}


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| bundle | params | decoder | chunk ms | real-time streams / core | "
             "peak audio-s per CPU-s |", "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['bundle']} | {r['parameters'] / 1e6:.2f} M | "
                     f"{r.get('decoder', 'greedy')} | {r['chunk_ms']} | "
                     f"{r['realtime_streams_per_core']} | {r['max_audio_s_per_cpu_s']} |")
    return "\n".join(lines) + "\n"
