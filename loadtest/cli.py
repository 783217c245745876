"""`chorus loadtest capacity`: end-to-end capacity of the real server (see loadtest/capacity.py)."""

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
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--target-ms", type=float, default=250.0)
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--bundle", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--decoder", choices=("greedy", "beam"), default=None,
                   help="server's stream decoder (default: the bundle's)")
    p.add_argument("--manifest", type=Path, default=None, help="Lhotse cuts to play")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    p.add_argument("--stem", default=None, help="default: capacity-<protocol>")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from loadtest.capacity import CapacityConfig, markdown, run_capacity, write

    cfg = CapacityConfig(protocol=args.protocol, policies=args.policy, streams=args.streams,
                         seconds=args.seconds, target_ms=args.target_ms, backend=args.backend,
                         bundle=args.bundle, threads=args.threads, decoder=args.decoder)
    result = run_capacity(cfg, args.manifest)
    paths = write(result, args.out, args.stem or f"capacity-{args.protocol}")
    print(markdown(result))
    print(json.dumps({"wrote": [str(p) for p in paths]}))
    return 0
