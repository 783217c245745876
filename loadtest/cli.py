"""`chorus loadtest capacity | faults | fuzz | soak`: the real server under load and abuse.

capacity: end-to-end capacity (loadtest/capacity.py); faults: each fault beside healthy streams
(loadtest/faults.py); fuzz: generated hostile messages (loadtest/fuzz.py); soak: a long run at a
fraction of capacity, resources sampled (loadtest/soak.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from server.cli import _ints, _names  # the same comma-separated list arguments


def register(sub: argparse._SubParsersAction) -> None:
    lt = sub.add_parser("loadtest", help="load tests against the real server")
    lt_sub = lt.add_subparsers(dest="loadtest_command", required=True)
    p = lt_sub.add_parser("capacity", help="ramp real-time streams until latency breaks",
                          description="Starts `chorus serve` per policy, ramps concurrent real-time "
                                      "streams, writes JSON + markdown + PNG.")
    p.add_argument("--protocol", choices=("ws", "grpc"), default="ws")
    p.add_argument("--policy", type=_names, default=("eager", "none"))
    p.add_argument("--streams", type=_ints, default=(1, 2, 4, 8, 16, 32, 64))
    p.add_argument("--seconds", type=float, default=15.0, help="measured window of each run")
    p.add_argument("--target-ms", type=float, default=250.0)
    p.add_argument("--repeats", type=int, default=3,
                   help="runs per load point (rows: median, min and max of the runs)")
    p.add_argument("--spread-s", type=float, default=1.0,
                   help="each stream starts, and stops, at its own offset drawn uniformly over "
                        "this many seconds (at least a chunk period)")
    p.add_argument("--warm-s", type=float, default=2.0,
                   help="first start -> the measured window (at least --spread-s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the start / stop offsets")
    p.add_argument("--workers", type=_ints, default=(1,),
                   help="server processes (chorus serve --workers) to measure, e.g. 1,2: each "
                        "count with each policy")
    p.add_argument("--backend", default="onnxruntime",
                   help="the server's backend; torch+int8: chorus serve --backend torch --int8")
    p.add_argument("--bundle", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--decoder", choices=("greedy", "beam"), default=None,
                   help="server's stream decoder (default: the bundle's)")
    p.add_argument("--manifest", type=Path, default=None, help="Lhotse cuts to play")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    p.add_argument("--stem", default=None, help="default: capacity-<protocol>")
    p.set_defaults(func=run)
    register_faults(lt_sub)
    register_fuzz(lt_sub)
    register_soak(lt_sub)


def _server_args(p: argparse.ArgumentParser) -> None:
    """A running server to drive, or the one to start when none is given."""
    p.add_argument("--ws", default=None, help="ws://HOST:PORT/v1/stream of a running server "
                                              "(default: start one with small limits)")
    p.add_argument("--grpc", default=None, help="HOST:PORT of its gRPC port")
    p.add_argument("--api-key", default=None, help="the key its clients present")
    p.add_argument("--bundle", default=None, help="started server: bundle (default: shipped)")
    p.add_argument("--backend", default="onnxruntime", help="started server: backend")
    p.add_argument("--threads", type=int, default=1, help="started server: threads")
    p.add_argument("--decoder", choices=("greedy", "beam"), default=None,
                   help="started server: stream decoder (default: the bundle's)")
    p.add_argument("--manifest", type=Path, default=None,
                   help="Lhotse cuts to play (default: sentences synthesized with espeak-ng)")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks"))


def register_faults(lt_sub: argparse._SubParsersAction) -> None:
    p = lt_sub.add_parser("faults", help="inject each fault beside healthy real-time streams",
                          description="Each fault (cut connections, cancels, slow readers, bad "
                                      "audio / JSON / config, oversize, bad keys, capacity, idle, "
                                      "drain) beside healthy streams; writes JSON + markdown: "
                                      "what the faulty client got, healthy streams intact.")
    _server_args(p)
    p.add_argument("--healthy", type=int, default=4, help="healthy streams beside each fault")
    p.add_argument("--protocols", type=_names, default=("ws", "grpc"),
                   help="the healthy streams' protocols, in turn")
    p.add_argument("--healthy-seconds", type=float, default=None,
                   help="cut each healthy utterance to this many seconds")
    p.add_argument("--per-round", type=int, default=1,
                   help="faults per round of healthy streams (1: each fault its own)")
    p.add_argument("--burst-rate", type=float, default=20.0, help="cuts per second in bursts")
    p.add_argument("--burst-s", type=float, default=1.0)
    p.add_argument("--only", type=_names, default=(), help="fault name prefixes to run")
    p.add_argument("--idle-timeout-s", type=float, default=30.0,
                   help="--ws server's limits.idle_timeout_s")
    p.add_argument("--max-frame-bytes", type=int, default=1 << 20,
                   help="--ws server's limits.max_frame_bytes")
    p.add_argument("--fill-max", type=int, default=512,
                   help="over capacity: open at most this many streams")
    p.add_argument("--no-drain", action="store_true", help="started server: skip the SIGTERM drain")
    p.add_argument("--stem", default="faults")
    p.set_defaults(func=run_faults_cmd)


def run_faults_cmd(args: argparse.Namespace) -> int:
    from loadtest.faults import FaultsConfig, markdown, run_faults, write

    cfg = FaultsConfig(healthy=args.healthy, protocols=args.protocols,
                       healthy_seconds=args.healthy_seconds, per_round=args.per_round,
                       burst_rate=args.burst_rate, burst_s=args.burst_s, only=args.only,
                       idle_timeout_s=args.idle_timeout_s, max_frame_bytes=args.max_frame_bytes,
                       fill_max=args.fill_max, drain=not args.no_drain, bundle=args.bundle,
                       backend=args.backend, threads=args.threads, decoder=args.decoder)
    result = run_faults(cfg, args.ws, args.grpc, args.api_key, args.manifest)
    paths = write(result, args.out, args.stem)
    print(markdown(result))
    print(json.dumps({"wrote": [str(p) for p in paths], "ok": result["ok"]}))
    return 0 if result["ok"] else 1


def run(args: argparse.Namespace) -> int:
    from loadtest.capacity import CapacityConfig, markdown, run_capacity, write

    cfg = CapacityConfig(protocol=args.protocol, policies=args.policy, streams=args.streams,
                         seconds=args.seconds, target_ms=args.target_ms, backend=args.backend,
                         bundle=args.bundle, threads=args.threads, decoder=args.decoder,
                         repeats=args.repeats, spread_s=args.spread_s, warm_s=args.warm_s,
                         seed=args.seed, workers=args.workers)
    result = run_capacity(cfg, args.manifest)
    paths = write(result, args.out, args.stem or f"capacity-{args.protocol}")
    print(markdown(result))
    print(json.dumps({"wrote": [str(p) for p in paths]}))
    return 0


def register_fuzz(lt_sub: argparse._SubParsersAction) -> None:
    p = lt_sub.add_parser("fuzz", help="generated hostile messages over real sockets",
                          description="N generated messages (mutated control JSON, random frames, "
                                      "corrupted WAV, misused protocol orders, random gRPC configs) "
                                      "across many connections beside a healthy stream; reports "
                                      "crashes, hangs, internal errors and the close codes.")
    _server_args(p)
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=8, help="connections at a time")
    p.add_argument("--timeout-s", type=float, default=15.0, help="a case slower than this hangs")
    p.add_argument("--grpc-share", type=float, default=0.25, help="fraction of gRPC cases")
    p.add_argument("--healthy", type=int, default=1)
    p.add_argument("--healthy-seconds", type=float, default=None)
    p.add_argument("--max-frame-bytes", type=int, default=1 << 20,
                   help="--ws server's limits.max_frame_bytes")
    p.add_argument("--stem", default="fuzz")
    p.set_defaults(func=run_fuzz_cmd)


def run_fuzz_cmd(args: argparse.Namespace) -> int:
    from loadtest.fuzz import FuzzConfig, markdown, run_fuzz, write

    cfg = FuzzConfig(messages=args.messages, seed=args.seed, concurrency=args.concurrency,
                     timeout_s=args.timeout_s, grpc_share=args.grpc_share, healthy=args.healthy,
                     healthy_seconds=args.healthy_seconds, max_frame_bytes=args.max_frame_bytes,
                     bundle=args.bundle, backend=args.backend, threads=args.threads,
                     decoder=args.decoder)
    result = run_fuzz(cfg, args.ws, args.grpc, args.api_key, args.manifest)
    paths = write(result, args.out, args.stem)
    print(markdown(result))
    print(json.dumps({"wrote": [str(p) for p in paths], "ok": result["ok"]}))
    return 0 if result["ok"] else 1


def register_soak(lt_sub: argparse._SubParsersAction) -> None:
    p = lt_sub.add_parser("soak", help="a long run at a fraction of capacity, resources sampled",
                          description="load x capacity real-time streams (a loop of utterances "
                                      "each, reconnecting after each) for --minutes; samples the "
                                      "server's memory, fds, threads and event-loop tasks, counts "
                                      "errors and finals lost; writes JSON + markdown + PNG.")
    _server_args(p)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--load", type=float, default=0.8, help="fraction of the capacity")
    p.add_argument("--streams", type=int, default=None, help="the capacity, in streams")
    p.add_argument("--capacity-json", default=None,
                   help="or: a `chorus loadtest capacity` JSON to read it from")
    p.add_argument("--policy", default="eager", help="whose capacity in --capacity-json")
    p.add_argument("--protocols", type=_names, default=("ws", "grpc"))
    p.add_argument("--sample-s", type=float, default=5.0)
    p.add_argument("--window-s", type=float, default=60.0, help="growth: first vs last window")
    p.add_argument("--utterance-seconds", type=float, default=None)
    p.add_argument("--pid", type=int, default=None,
                   help="--ws server's PID (psutil: it and its worker processes)")
    p.add_argument("--workers", type=int, default=1,
                   help="serving processes of the server this command starts")
    p.add_argument("--stem", default="soak")
    p.set_defaults(func=run_soak_cmd)


def run_soak_cmd(args: argparse.Namespace) -> int:
    from loadtest.soak import SoakConfig, markdown, run_soak, write

    cfg = SoakConfig(minutes=args.minutes, load=args.load, capacity=args.streams,
                     capacity_json=args.capacity_json, policy=args.policy, protocols=args.protocols,
                     sample_s=args.sample_s, window_s=args.window_s,
                     utterance_seconds=args.utterance_seconds, pid=args.pid, bundle=args.bundle,
                     backend=args.backend, threads=args.threads, decoder=args.decoder,
                     workers=args.workers)
    if args.ws and args.workers != 1:
        raise SystemExit("chorus loadtest soak: --workers sizes the server this command starts; "
                         "against --ws, give its supervisor's --pid instead")
    try:
        cfg.streams()
    except (ValueError, OSError, KeyError) as exc:
        raise SystemExit(f"chorus loadtest soak: {exc}") from exc
    result = run_soak(cfg, args.ws, args.grpc, args.api_key, args.manifest)
    paths = write(result, args.out, args.stem)
    print(markdown(result))
    print(json.dumps({"wrote": [str(p) for p in paths], "ok": result["ok"]}))
    return 0 if result["ok"] else 1
