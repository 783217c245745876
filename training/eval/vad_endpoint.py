"""Endpointing with and without the neural VAD, through the server's own streams.

`python -m training.eval.vad_endpoint --manifest data/synth/cuts_test.jsonl.gz --out DIR`

Each test stream is three held-out utterances (each trimmed to its voiced extent) joined by
pauses drawn from 0.3 / 0.7 / 1.5 / 3.0 s, after 0.5 s of silence and before a 2 s tail, clean
and with pink noise at 10 dB SNR (relative to the speech's power) over the whole stream. The
streams run through an in-process `server.app.App` (Batch Dispatch, the production Session
and its endpointing), fed in 100 ms pieces, once per endpoint setting. Per setting:

- time to final: how long after an utterance's speech ended its cut came, in stream seconds
  (the decoder's time at the cut: compute speed does not enter); the last utterance's
  (the 2 s tail) is what a voice assistant waits for;
- cuts per pause length: how often a pause of that length ended the utterance before it;
- cuts inside speech (a final in the middle of an utterance) and extra finals in pauses;
- WER of the stream's finals joined, against the references joined.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.eval.metrics import error_rates
from training.eval.run import Utterance, load_manifest

RATE = 16_000
PAUSES = (0.3, 0.7, 1.5, 3.0)
LEAD_S, TAIL_S = 0.5, 2.0
SETTINGS: dict[str, dict[str, Any]] = {  # name -> EndpointConfig fields
    "decoder 800 ms (default)": {},
    "decoder 500 ms": {"trailing_silence_ms": 500.0},
    "VAD 500 ms": {"vad": True, "vad_silence_ms": 500.0},
    "VAD 300 ms": {"vad": True, "vad_silence_ms": 300.0},
}


@dataclass
class JoinedStream:
    audio: np.ndarray  # (samples,) float32 at 16 kHz
    spans: list[tuple[float, float]]  # speech (start, end) s of each utterance
    pauses: list[float]  # the silence after each utterance (the last: the tail)
    ref: str


def voiced(x: np.ndarray, rel: float = 0.02, margin_s: float = 0.03) -> np.ndarray:
    """x trimmed to where its amplitude passes `rel` of its peak, with a small margin."""
    idx = np.flatnonzero(np.abs(x) > rel * (np.max(np.abs(x)) + 1e-9))
    if idx.size == 0:
        return x
    m = int(margin_s * RATE)
    return x[max(0, idx[0] - m) : idx[-1] + 1 + m]


def build_streams(utts: list[Utterance], n: int, seed: int) -> list[JoinedStream]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        picks = [utts[i] for i in rng.choice(len(utts), size=3, replace=False)]
        pauses = [float(p) for p in rng.choice(PAUSES, size=2)] + [TAIL_S]
        parts, spans, t = [np.zeros(int(LEAD_S * RATE), np.float32)], [], LEAD_S
        for u, pause in zip(picks, pauses, strict=True):
            x = voiced(u.audio())
            spans.append((t, t + x.size / RATE))
            parts += [x, np.zeros(int(pause * RATE), np.float32)]
            t += x.size / RATE + int(pause * RATE) / RATE
        out.append(JoinedStream(np.concatenate(parts), spans, pauses,
                              " ".join(u.ref for u in picks)))
    return out


def with_noise(s: JoinedStream, snr_db: float, rng: np.random.Generator) -> JoinedStream:
    """Pink noise over the whole stream, scaled against the power of the speech alone."""
    from training.data.augment import shape_noise

    speech = np.concatenate([s.audio[int(a * RATE) : int(b * RATE)] for a, b in s.spans])
    noise = shape_noise(rng.standard_normal(s.audio.size), "pink")
    scale = np.sqrt(np.mean(speech.astype(np.float64) ** 2) /
                    (np.mean(noise**2) * 10 ** (snr_db / 10)))
    y = s.audio + noise * scale
    peak = float(np.max(np.abs(y)))
    y = y / peak * 0.99 if peak > 0.99 else y
    return JoinedStream(y.astype(np.float32), s.spans, s.pauses, s.ref)


async def _run_one(app: Any, s: JoinedStream, endpoint: Any) -> tuple[list[Any], list[Any]]:
    """-> (finals cut by endpointing while audio came, finals owed at the end of the stream)."""
    from server.audio_in import AudioFormat
    from server.session import Final

    stream = app.open(app.session_config(format=AudioFormat("pcm_f32le", RATE, 1),
                                         interim_results=False, continuous=True,
                                         endpoint=endpoint))
    data = s.audio.astype("<f4").tobytes()
    piece = int(0.1 * RATE) * 4
    cut: list[Any] = []
    try:
        for i in range(0, len(data), piece):
            cut += [e for e in await stream.feed(data[i : i + piece]) if isinstance(e, Final)]
            await asyncio.sleep(0)  # let the other streams feed: they batch together
        owed = [e for e in await stream.finish() if isinstance(e, Final)]
    finally:
        stream.close()
    return cut, owed


def score(streams: list[JoinedStream], results: list[tuple[list[Any], list[Any]]]) -> dict[str, Any]:
    delays_tail: list[float] = []
    delays_pause: list[float] = []
    cut_by_pause: dict[str, list[int]] = {f"{p:g}": [] for p in (*PAUSES, TAIL_S)}
    inside = extra = 0
    refs, hyps = [], []
    for s, (cut, owed) in zip(streams, results, strict=True):
        ends = [f.end for f in cut]
        for k, ((a, b), pause) in enumerate(zip(s.spans, s.pauses, strict=True)):
            nxt = s.spans[k + 1][0] if k + 1 < len(s.spans) else s.audio.size / RATE
            mine = [c for c in ends if b - 0.15 <= c <= nxt + 0.05]
            last = k + 1 == len(s.spans)
            cut_by_pause[f"{TAIL_S:g}" if last else f"{pause:g}"].append(int(bool(mine)))
            if mine:
                (delays_tail if last else delays_pause).append(mine[0] - b)
                extra += len(mine) - 1
            inside += sum(1 for c in ends if a + 0.15 < c < b - 0.15)
        refs.append(s.ref)
        hyps.append(" ".join(f.text for f in cut + owed if f.text))

    def stats(x: list[float]) -> dict[str, float | None]:
        if not x:
            return {"n": 0, "median_s": None, "p90_s": None}
        return {"n": len(x), "median_s": round(float(np.median(x)), 3),
                "p90_s": round(float(np.percentile(x, 90)), 3)}

    return {"time_to_final_tail": stats(delays_tail), "time_to_final_pause": stats(delays_pause),
            "cut_rate_by_pause_s": {k: round(float(np.mean(v)), 3) if v else None
                                    for k, v in cut_by_pause.items()},
            "cuts_inside_speech": inside, "extra_finals_in_pauses": extra,
            "wer": round(error_rates(refs, hyps).wer * 100, 1)}


async def evaluate(bundle: Any, conditions: dict[str, list[JoinedStream]],
                   settings: dict[str, dict[str, Any]], *, progress: bool = True
                   ) -> dict[str, dict[str, Any]]:
    from tqdm import tqdm

    from server.app import App, ServerConfig
    from server.session import EndpointConfig

    app = App(ServerConfig(endpoint=EndpointConfig(vad=True)), bundle=bundle)  # VAD loads first
    await app.start()
    out: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=len(settings) * sum(len(v) for v in conditions.values()), unit="stream",
               disable=not progress)
    try:
        for cond, streams in conditions.items():
            for name, fields in settings.items():
                ep = EndpointConfig(**fields)
                t0 = time.perf_counter()
                results = []
                for i in range(0, len(streams), 16):  # 16 concurrent streams per batch
                    batch = streams[i : i + 16]
                    results += await asyncio.gather(*(_run_one(app, s, ep) for s in batch))
                    bar.update(len(batch))
                row = score(streams, results)
                row["wall_s"] = round(time.perf_counter() - t0, 1)
                out.setdefault(cond, {})[name] = row
    finally:
        bar.close()
        await app.stop()
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = []
    for cond, rows in result["conditions"].items():
        lines += [f"### {cond} ({result['streams']} streams of 3 utterances)", "",
                  "| endpointing | time to final, tail: median / p90 s | after a pause: median"
                  " / p90 s | cut at 0.3 / 0.7 / 1.5 / 3.0 s pauses | cuts inside speech |"
                  " extra finals | WER % | wall s |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r in rows.items():
            tail, pause, cut = r["time_to_final_tail"], r["time_to_final_pause"], \
                r["cut_rate_by_pause_s"]
            rates = " / ".join("-" if cut[f"{p:g}"] is None else f"{cut[f'{p:g}'] * 100:.0f}%"
                               for p in PAUSES)
            lines.append(f"| {name} | {tail['median_s']} / {tail['p90_s']} | "
                         f"{pause['median_s']} / {pause['p90_s']} | {rates} | "
                         f"{r['cuts_inside_speech']} | {r['extra_finals_in_pauses']} | "
                         f"{r['wer']} | {r['wall_s']} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.eval.vad_endpoint", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", required=True, help="held-out cuts (e.g. the test split)")
    p.add_argument("--bundle", default=None, help="default: the shipped model")
    p.add_argument("--streams", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--snr", type=float, default=10.0, help="the noisy condition's SNR (dB)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    import torch

    from models.bundle import load

    torch.set_num_threads(1)
    bundle = load(args.bundle) if args.bundle else load()
    utts = load_manifest(args.manifest)
    clean = build_streams(utts, args.streams, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    conditions = {"clean": clean,
                  f"pink noise {args.snr:g} dB": [with_noise(s, args.snr, rng) for s in clean]}
    res = asyncio.run(evaluate(bundle, conditions, SETTINGS))
    result = {"manifest": str(args.manifest), "bundle": args.bundle or "shipped",
              "streams": args.streams, "seed": args.seed, "pauses_s": list(PAUSES),
              "tail_s": TAIL_S, "conditions": res}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vad_endpoint.json").write_text(json.dumps(result, indent=1) + "\n")
    md = markdown(result)
    (args.out / "vad_endpoint.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
