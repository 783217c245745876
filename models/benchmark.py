"""`chorus bench model`: how many real-time streams one CPU core carries for a bundle.

Per step the server runs the model on B streams' next chunk at once (Batch Dispatch) and, per
stream, the feature front end and the decoder. So the cost of one step with B streams is
    t(B) = t_model(B) + B * t_stream
measured here (1 thread, model step timed per batch size, front end + decoder timed on one
stream). B streams are real time while t(B) <= chunk seconds; streams per core is the largest
such B. The sweep also reports audio seconds processed per CPU second at each B.

Decoders: greedy is timed on the model's outputs for noise (its cost hardly depends on them);
beam search with the bundle's LM (`decoder="beam"`) is timed over the outputs of real speech,
eight different sentences spoken by espeak-ng, chunk by chunk (averaged per stream-chunk),
since a beam's and an LM's work grow with the words the model hears. The eight streams are
decoded together as the server does (models.decoding.batch.advance_all: a neural LM makes one
batched call per frame for all of them) and, for comparison, one by one; a neural LM starts
each timing with an empty cache (the pessimistic case: a long-running server's cache is warm).
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
    int8: bool = False  # the model step in dynamic int8 (models/quantize.py), as serve --int8


SPEECH = ("please set an alarm for seven thirty tomorrow morning and remind me to call "
          "the office about the meeting on thursday")
SENTENCES = (SPEECH,
             "what is the weather going to be like in boston this weekend",
             "send a message to my sister saying i will be home late tonight",
             "play some relaxing music in the living room at a low volume",
             "how many miles is it from the airport to the center of the city",
             "turn off the kitchen lights and lock the front door please",
             "read me the first three items on my shopping list for today",
             "the quick brown fox jumps over the lazy dog near the river bank")


def speech_outputs(bundle: Any, text: str = SPEECH) -> list[torch.Tensor]:
    """The model's outputs, chunk by chunk, for `text` spoken by espeak-ng (one stream)."""
    from models.audio import speak
    from models.streaming import Chunker

    audio = speak(text, sample_rate=bundle.features.sample_rate)
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
    from models.decoding.batch import advance_all
    from models.features import Fbank, StreamingFbank

    cfg = cfg or BenchConfig()
    torch.set_num_threads(cfg.threads)
    model = bundle.model
    if cfg.int8:
        from models.quantize import quantize_int8

        model = quantize_int8(model)
    chunk = bundle.decoding.chunk_frames
    chunk_s = chunk * bundle.features.hop_ms / 1000
    frames = chunk + model.lookahead_frames
    rng = np.random.default_rng(0)

    # per-stream cost: features for one chunk of audio + greedy decoding of its outputs
    samples = (0.1 * rng.standard_normal(int(chunk_s * bundle.features.sample_rate))).astype(np.float32)
    fb = StreamingFbank(fbank=Fbank(bundle.features))
    beam_alone = beam_unbatched = None
    if cfg.decoder == "beam":
        streams = [speech_outputs(bundle, text) for text in SENTENCES]  # (T'_chunk, V) each
        stream_chunks = sum(len(c) for c in streams)

        def decode_all(together: bool) -> None:
            if bundle.lm is not None:
                bundle.lm.lm.clear_cache()
            decs = [bundle_decoder(bundle, "beam", beam_size=bundle.decoding.beam_size,
                                   lm=bundle.lm) for _ in streams]
            for i in range(max(len(c) for c in streams)):
                live = [(d, c[i]) for d, c in zip(decs, streams, strict=True) if i < len(c)]
                if together:  # as the server's dispatcher does after each batched step
                    advance_all([d for d, _ in live], [o.numpy() for _, o in live])
                else:
                    for d, o in live:
                        d.update(o)
                for d, _ in live:
                    d.result()  # a partial per chunk, as the server sends
            for d in decs:
                d.finalize()

        t_decode = _median_seconds(lambda: decode_all(True), cfg.repeats) / stream_chunks
        beam_alone = _median_seconds(lambda: decode_all(False), cfg.repeats) / stream_chunks
        if bundle.lm is not None and bundle.lm.lm.batched:  # and with no LM batching at all
            bundle.lm.lm.batched = False
            try:
                beam_unbatched = (_median_seconds(lambda: decode_all(False), cfg.repeats)
                                  / stream_chunks)
            finally:
                bundle.lm.lm.batched = True
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
    return {"bundle": str(bundle.path), "int8": cfg.int8,
            "parameters": bundle.model.num_parameters(),
            "decoder": cfg.decoder, "chunk_ms": round(1000 * chunk_s), "threads": cfg.threads,
            "per_stream_ms": round(1000 * t_stream, 4), "sweep": rows,
            # beam: decoding alone per stream-chunk, the streams together vs one by one
            "beam_decode_ms": None if beam_alone is None else round(1000 * t_decode, 4),
            "beam_decode_alone_ms": None if beam_alone is None else round(1000 * beam_alone, 4),
            # a neural LM: one by one with no LM batching (each context its own step)
            "beam_decode_unbatched_lm_ms": (None if beam_unbatched is None
                                            else round(1000 * beam_unbatched, 4)),
            "realtime_streams_per_core": capacity // cfg.threads if cfg.threads else capacity,
            "max_audio_s_per_cpu_s": max(r["audio_s_per_cpu_s"] for r in rows)}


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| bundle | params | decoder | chunk ms | real-time streams / core | "
             "peak audio-s per CPU-s | beam decoding ms per stream-chunk: together / one by one |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        beam = (f"{r['beam_decode_ms']:.3f} / {r['beam_decode_alone_ms']:.3f}"
                if r.get("beam_decode_ms") is not None else "-")
        if r.get("beam_decode_unbatched_lm_ms") is not None:
            beam += f" (LM unbatched: {r['beam_decode_unbatched_lm_ms']:.3f})"
        name = r["bundle"] + (" (int8)" if r.get("int8") else "")
        lines.append(f"| {name} | {r['parameters'] / 1e6:.2f} M | "
                     f"{r.get('decoder', 'greedy')} | {r['chunk_ms']} | "
                     f"{r['realtime_streams_per_core']} | {r['max_audio_s_per_cpu_s']} | {beam} |")
    return "\n".join(lines) + "\n"
