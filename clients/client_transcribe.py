"""`chorus client transcribe --grpc HOST:PORT FILES...`: batch transcription over gRPC.

Each file goes through the native `Recognize` (the server reads WAV headers and resamples;
other formats are decoded locally to 16 kHz PCM16 first), `--concurrency` at a time, with a
progress bar. Output: JSON lines (`--out results.jsonl`, one per file, written as each
finishes, so an interrupted run resumes: files already in the output are skipped) or SubRip
subtitles (`--out DIR.srt`: one DIR/<name>.srt per file, skipped when present).
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transcribe", help="batch transcription of files over gRPC")
    p.add_argument("audio", nargs="+", type=Path)
    p.add_argument("--grpc", default="127.0.0.1:50051", help="server host:port")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--out", type=Path, default=None, help="results.jsonl, or NAME.srt (a directory)")
    p.add_argument("--api-key", default=None)
    p.add_argument("--tls-ca", default=None, help="CA / self-signed certificate: use TLS")
    p.set_defaults(func=run)


def srt_time(t: float) -> str:
    ms = round(t * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def to_srt(results: list[Any]) -> str:
    cues = [r for r in results if r.text]
    return "".join(f"{i}\n{srt_time(r.start)} --> {srt_time(r.end)}\n{r.text}\n\n"
                   for i, r in enumerate(cues, 1))


def payload(path: Path) -> tuple[bytes, Any]:
    """(bytes, pb encoding): WAV files as they are; anything else decoded to 16 kHz PCM16."""
    from models.audio import load_audio, to_pcm16
    from server.audio_in import looks_like_wav
    from server.grpc_codegen import generated

    pb, _ = generated()
    data = path.read_bytes()
    if looks_like_wav(data):
        return data, pb.AudioFormat(encoding=pb.WAV)
    pcm = to_pcm16(load_audio(path, sample_rate=16_000))
    return pcm, pb.AudioFormat(encoding=pb.PCM_S16LE, sample_rate_hertz=16_000, channels=1)


def run(args: argparse.Namespace) -> int:
    import grpc
    from tqdm import tqdm

    from server.grpc_codegen import generated

    pb, pb_grpc = generated()
    missing = [str(p) for p in args.audio if not p.is_file()]
    if missing:
        raise SystemExit(f"chorus client transcribe: audio file(s) not found: {missing}")
    srt = args.out is not None and args.out.suffix == ".srt"
    done: set[str] = set()
    if args.out is not None and not srt and args.out.is_file():
        done = {json.loads(line)["path"] for line in args.out.read_text().splitlines() if line.strip()}
    srt_dir = args.out.with_suffix("") if srt else None

    def target(p: Path) -> Path | None:
        return srt_dir / f"{p.stem}.srt" if srt_dir else None

    todo = [p for p in args.audio if str(p) not in done and not (srt and target(p).is_file())]  # type: ignore[union-attr]
    if srt_dir:
        srt_dir.mkdir(parents=True, exist_ok=True)
    creds = grpc.ssl_channel_credentials(Path(args.tls_ca).read_bytes()) if args.tls_ca else None
    channel = (grpc.secure_channel(args.grpc, creds) if creds else grpc.insecure_channel(args.grpc))
    meta = (("authorization", f"Bearer {args.api_key}"),) if args.api_key else None
    stub = pb_grpc.AsrStub(channel)

    def one(path: Path) -> Any:
        data, fmt = payload(path)
        return stub.Recognize(pb.RecognizeRequest(config=pb.RecognitionConfig(format=fmt), audio=data),
                              metadata=meta, timeout=3600)

    out = args.out.open("a") if args.out is not None and not srt else None
    failed = 0
    try:
        with ThreadPoolExecutor(max(1, args.concurrency)) as pool, \
                tqdm(total=len(args.audio), initial=len(args.audio) - len(todo), unit="file",
                     file=sys.stderr) as bar:
            futures = {pool.submit(one, p): p for p in todo}
            for fut in as_completed(futures):
                path = futures[fut]
                try:
                    resp = fut.result()
                    line = {"path": str(path), "text": resp.text,
                            "words": [{"word": w.word, "start": round(w.start, 3),
                                       "end": round(w.end, 3), "confidence": round(w.confidence, 4)}
                                      for r in resp.results for w in r.words]}
                    if srt:
                        target(path).write_text(to_srt(list(resp.results)))  # type: ignore[union-attr]
                except grpc.RpcError as exc:
                    failed += 1
                    line = {"path": str(path), "error": f"{exc.code().name}: {exc.details()}"}
                except ValueError as exc:  # unreadable audio
                    failed += 1
                    line = {"path": str(path), "error": str(exc)}
                if out is not None and "error" not in line:
                    out.write(json.dumps(line) + "\n")
                    out.flush()
                if out is None or "error" in line:
                    print(json.dumps(line), flush=True)
                bar.update(1)
    finally:
        if out is not None:
            out.close()
        channel.close()
    return 1 if failed else 0
