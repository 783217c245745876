"""`chorus batch`: transcribe many files with one gRPC BatchRecognize call (native API).

Results are printed as JSON lines as each file finishes (not in input order), with a progress
bar on stderr; a file that fails gets an "error" field and the others go on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("batch", help="transcribe many files via gRPC BatchRecognize")
    p.add_argument("audio", nargs="+", type=Path)
    p.add_argument("--server", default="127.0.0.1:50051", help="gRPC host:port")
    p.add_argument("--api-key", default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import grpc
    from tqdm import tqdm

    from server.grpc_codegen import generated

    pb, pb_grpc = generated()
    items, names = [], {}
    for i, path in enumerate(args.audio):
        if not path.is_file():
            raise SystemExit(f"chorus batch: audio file not found: {path}")
        items.append(pb.BatchItem(id=str(i), audio=path.read_bytes()))
        names[str(i)] = str(path)
    config = pb.RecognitionConfig(format=pb.AudioFormat(encoding=pb.WAV))
    meta = (("authorization", f"Bearer {args.api_key}"),) if args.api_key else None
    failed = 0
    with grpc.insecure_channel(args.server, options=[("grpc.max_send_message_length", -1)]) as ch:
        stub = pb_grpc.AsrStub(ch)
        try:
            with tqdm(total=len(items), unit="file", file=sys.stderr) as bar:
                for r in stub.BatchRecognize(pb.BatchRecognizeRequest(config=config, items=items),
                                             metadata=meta):
                    line = {"path": names[r.id], "text": r.response.text}
                    if r.error:
                        line = {"path": names[r.id], "error": r.error}
                        failed += 1
                    print(json.dumps(line), flush=True)
                    bar.update(1)
        except grpc.RpcError as exc:
            raise SystemExit(f"chorus batch: {exc.code().name}: {exc.details()}") from exc
    return 1 if failed else 0
