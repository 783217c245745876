"""Server-side commands: `chorus serve` and `chorus bench dispatch`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


SERVE_SETTINGS: list[str] = []  # the config keys `chorus serve` has flags for


def register(sub: argparse._SubParsersAction) -> None:
    from models.cli import BENCH_SUBCOMMANDS
    from server.serve import setting_default, settings_listing

    sv = sub.add_parser("serve", help="run the streaming recognition server",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="WebSocket /v1/stream + HTTP (/healthz /readyz /metrics /) with "
                                    "Batch Dispatch, gRPC, and optionally the Vosk WebSocket "
                                    "protocol (--vosk-port) and OpenAI-compatible HTTP "
                                    "transcription (--http-port). Settings: --config YAML < "
                                    "CHORUS_* env (top-level settings, e.g. CHORUS_WS_PORT) < flags.",
                        epilog="Every setting a --config YAML file may hold, with its default "
                               "(nested ones as\nsections, e.g. `limits:` then `  idle_timeout_s: "
                               "10`):\n" + settings_listing())
    sv.add_argument("--config", type=Path, default=None, help="YAML file of settings (below)")
    # each setting flag's dest is its config key ("section.field" when nested); None: not given
    sv.add_argument("--bundle", default=None, help="model bundle (default: the shipped one)")
    sv.add_argument("--host", default=None)
    sv.add_argument("--ws-port", dest="ws_port", type=int, default=None,
                    help="WebSocket /v1/stream and the HTTP routes")
    sv.add_argument("--grpc-port", dest="grpc_port", type=int, default=None,
                    help="gRPC: native chorus.asr.v1 and Riva's API")
    sv.add_argument("--http-port", dest="http_port", type=int, default=None,
                    help="OpenAI-compatible HTTP: POST /v1/audio/transcriptions, GET /v1/models "
                         "(0: off)")
    sv.add_argument("--vosk-port", dest="vosk_port", type=int, default=None,
                    help="also serve the vosk-server WebSocket protocol on this port (Vosk's "
                         "clients use 2700; 0: off)")
    sv.add_argument("--backend", choices=("torch", "onnxruntime", "tensorrt"), default=None)
    sv.add_argument("--device", choices=("cpu", "cuda"), default=None,
                    help="where the model runs; cuda needs a CUDA build of torch or "
                         "onnxruntime-gpu, and fails at start-up without one")
    sv.add_argument("--ort-provider", dest="ort_provider", choices=("cpu", "cuda", "tensorrt"),
                    default=None, help="onnxruntime's execution provider (None: the device's); "
                                       "tensorrt caches its engines in the bundle's trt_cache/")
    sv.add_argument("--int8", action="store_true", default=None,
                    help="backend torch on CPU: run the GRU / LSTM / Linear layers in dynamic "
                         "int8 (about twice the streams per core; close to fp32, not equal)")
    sv.add_argument("--policy", choices=("eager", "timeout", "none"), default=None,
                    help="Batch Dispatch: eager batches whatever is ready, timeout waits up to "
                         "max_wait_ms for more, none steps one stream at a time")
    sv.add_argument("--max-wait-ms", dest="max_wait_ms", type=float, default=None,
                    help="policy timeout: how long a batch waits for more chunks")
    sv.add_argument("--threads", type=int, default=None, help="model threads")
    sv.add_argument("--workers", type=int, default=None,
                    help="serving processes sharing the ports (SO_REUSEPORT; admission, "
                         "/metrics and resume across them); 0 (default): one per core (one "
                         "with --device cuda or port 0)")
    sv.add_argument("--decoder", choices=("greedy", "beam"), default=None,
                    help="streams' default decoder (None: the bundle's; beam fuses its LM)")
    sv.add_argument("--max-streams", dest="max_streams", type=int, default=None,
                    help="admission: streams at once (more get 503 / RESOURCE_EXHAUSTED)")
    sv.add_argument("--max-batch", dest="max_batch", type=int, default=None,
                    help="chunks per model step")
    sv.add_argument("--api-key", dest="api_keys", action="append", default=None,
                    help="repeat for several keys (none: no authentication)")
    sv.add_argument("--tls-cert", dest="tls_cert", default=None)
    sv.add_argument("--tls-key", dest="tls_key", default=None)
    sv.add_argument("--idle-timeout-s", dest="limits.idle_timeout_s", type=float, default=None,
                    help="a stream that sends nothing this long ends (every protocol)")
    sv.add_argument("--max-frame-bytes", dest="limits.max_frame_bytes", type=int, default=None,
                    help="largest audio frame / message accepted")
    sv.add_argument("--max-stream-s", dest="limits.max_stream_s", type=float, default=None,
                    help="longest stream, in seconds of audio")
    sv.add_argument("--send-queue", dest="send_queue", type=int, default=None,
                    help="results waiting for a client that does not read, before it is "
                         "dropped (client_too_slow)")
    sv.add_argument("--drain-timeout-s", dest="drain_timeout_s", type=float, default=None,
                    help="on SIGTERM: how long open streams get to deliver their finals")
    sv.add_argument("--resume-window-s", dest="resume_window_s", type=float, default=None,
                    help="keep a stream whose connection dropped this long for its client to "
                         "resume it (0: no resume)")
    sv.add_argument("--vad", dest="endpoint.vad", action="store_true", default=None,
                    help="endpoint with the neural VAD beside the decoder "
                         "(endpoint.vad_silence_ms: the silence that ends an utterance)")
    for action in sv._actions:  # show the built-in default of every setting flag
        if action.dest in ("help", "config"):
            continue
        if "." in action.dest and action.nargs != 0:  # not LIMITS.IDLE_TIMEOUT_S
            action.metavar = action.dest.rpartition(".")[2].upper()
        default = setting_default(action.dest)
        if default not in (None, ()):  # None / (): the help says what not giving it means
            action.help = f"{action.help or ''} (default: {default})".lstrip()
    SERVE_SETTINGS[:] = [a.dest for a in sv._actions if a.dest not in ("help", "config")]
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
    p.add_argument("--backend", type=_names, default=("onnxruntime", "torch"),
                   help="e.g. onnxruntime,torch,torch+int8 (+int8: dynamic int8 on CPU)")
    p.add_argument("--chunk-ms", type=int, default=None,
                   help="model chunk and piece size (default: the bundle's, as served)")
    p.add_argument("--decoder", choices=("greedy", "beam"), default="greedy",
                   help="per-stream decoder (beam fuses the bundle's LM)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per point")
    p.add_argument("--repeats", type=int, default=1,
                   help="runs per point: a row is their median, with min-max (default 1)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where the model runs (cuda: torch's, or onnxruntime's CUDA provider)")
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
                              latency_target_ms=args.target_ms, decoder=args.decoder,
                              device=args.device, repeats=args.repeats)
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

    flags = {key: getattr(args, key) for key in SERVE_SETTINGS}
    try:
        return main(args.config, flags)
    except (BundleError, BackendUnavailable, ValueError, OSError) as exc:
        raise SystemExit(f"chorus serve: {exc}") from exc
