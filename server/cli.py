"""Server-side commands: `chorus bench dispatch` (and, later, `chorus serve`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def register(sub: argparse._SubParsersAction) -> None:
    from models.cli import BENCH_SUBCOMMANDS

    sv = sub.add_parser("serve", help="run the streaming recognition server",
                        description="WebSocket /v1/stream + HTTP (/healthz /readyz /metrics /) with "
                                    "Batch Dispatch, gRPC, and optionally the Vosk WebSocket "
                                    "protocol (--vosk-port) and OpenAI-compatible HTTP "
                                    "transcription (--http-port). Settings: --config YAML < "
                                    "CHORUS_* env < flags.")
    sv.add_argument("--config", type=Path, default=None)
    sv.add_argument("--bundle", default=None, help="default: the shipped bundle")
    sv.add_argument("--host", default=None)
    sv.add_argument("--ws-port", type=int, default=None)
    sv.add_argument("--grpc-port", type=int, default=None)
    sv.add_argument("--http-port", type=int, default=None,
                    help="OpenAI-compatible HTTP: POST /v1/audio/transcriptions, GET /v1/models "
                         "(default 0: off)")
    sv.add_argument("--vosk-port", type=int, default=None,
                    help="also serve the vosk-server WebSocket protocol on this port (Vosk's "
                         "clients use 2700; default 0: off)")
    sv.add_argument("--backend", choices=("torch", "onnxruntime", "tensorrt"), default=None)
    sv.add_argument("--device", choices=("cpu", "cuda"), default=None,
                    help="where the model runs (default cpu); cuda needs a CUDA build of torch "
                         "or onnxruntime-gpu, and fails at start-up without one")
    sv.add_argument("--ort-provider", choices=("cpu", "cuda", "tensorrt"), default=None,
                    help="onnxruntime's execution provider (default: the device's); tensorrt "
                         "caches its engines in the bundle's trt_cache/")
    sv.add_argument("--policy", choices=("eager", "timeout", "none"), default=None)
    sv.add_argument("--threads", type=int, default=None)
    sv.add_argument("--decoder", choices=("greedy", "beam"), default=None,
                    help="streams' default decoder (default: the bundle's; beam fuses its LM)")
    sv.add_argument("--max-streams", type=int, default=None)
    sv.add_argument("--max-batch", type=int, default=None)
    sv.add_argument("--api-key", action="append", default=None, help="repeat for several keys")
    sv.add_argument("--tls-cert", default=None)
    sv.add_argument("--tls-key", default=None)
    sv.add_argument("--resume-window-s", type=float, default=None,
                    help="keep a stream whose connection dropped this long for its client to "
                         "resume it (default 30; 0: no resume)")
    sv.add_argument("--vad", action="store_true", default=None,
                    help="endpoint with the neural VAD beside the decoder (endpoint.vad; "
                         "endpoint.vad_silence_ms: the silence that ends an utterance)")
    sv.set_defaults(func=run_serve)

    if not BENCH_SUBCOMMANDS:
        raise RuntimeError("models.cli must register before server.cli (the `bench` group)")
    p = BENCH_SUBCOMMANDS[-1].add_parser(  # the group of the parser being built now
        "dispatch", help="real-time streams through Batch Dispatch: latency, batch size, capacity",
        description="N simulated real-time streams of real speech per policy and backend; "
                    "writes JSON, a markdown table and a PNG plot.")
    p.add_argument("--bundle", type=Path, default=None, help="default: the shipped bundle")
    p.add_argument("--streams", type=_ints, default=(1, 8, 32, 64), help="e.g. 1,8,32,64")
    p.add_argument("--policy", type=_names, default=("eager", "none"), help="eager,timeout,none")
    p.add_argument("--backend", type=_names, default=("onnxruntime", "torch"))
    p.add_argument("--chunk-ms", type=int, default=None,
                   help="model chunk and piece size (default: the bundle's, as served)")
    p.add_argument("--decoder", choices=("greedy", "beam"), default="greedy",
                   help="per-stream decoder (beam fuses the bundle's LM)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per point")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--target-ms", type=float, default=250.0, help="p99 latency target")
    p.add_argument("--manifest", type=Path, default=None,
                   help="Lhotse cuts to play (default: sentences synthesized with espeak-ng)")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    p.add_argument("--stem", default="dispatch", help="output file name stem")
    p.set_defaults(func=run_bench_dispatch)


def run_bench_dispatch(args: argparse.Namespace) -> int:
    from loadtest.dispatch_bench import BenchDispatchConfig, markdown, run_benchmark, write
    from models.backends import BackendUnavailable
    from models.bundle import BundleError

    cfg = BenchDispatchConfig(streams=args.streams, policies=args.policy, backends=args.backend,
                              chunk_ms=args.chunk_ms, seconds=args.seconds, threads=args.threads,
                              latency_target_ms=args.target_ms, decoder=args.decoder)
    try:
        result = run_benchmark(args.bundle, cfg, args.manifest)
    except (BundleError, BackendUnavailable, ValueError) as exc:
        raise SystemExit(f"chorus bench dispatch: {exc}") from exc
    paths = write(result, args.out, args.stem)
    print(markdown(result))
    print(json.dumps({"wrote": [str(p) for p in paths]}))
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from models.backends import BackendUnavailable
    from models.bundle import BundleError
    from server.serve import main

    flags = {"bundle": args.bundle, "host": args.host, "ws_port": args.ws_port, "grpc_port": args.grpc_port,
             "vosk_port": args.vosk_port, "http_port": args.http_port,
             "backend": args.backend, "device": args.device, "ort_provider": args.ort_provider,
             "policy": args.policy, "threads": args.threads,
             "decoder": args.decoder,
             "max_streams": args.max_streams, "max_batch": args.max_batch,
             "api_keys": args.api_key, "tls_cert": args.tls_cert, "tls_key": args.tls_key,
             "resume_window_s": args.resume_window_s, "vad": args.vad}
    try:
        return main(args.config, flags)
    except (BundleError, BackendUnavailable, ValueError, OSError) as exc:
        raise SystemExit(f"chorus serve: {exc}") from exc
