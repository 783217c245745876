"""Generate the native gRPC stubs from protos/ at build / first use (never committed).

`generated()` compiles protos/chorus/asr/v1/asr.proto with grpc_tools into
server/_generated/ (ignored by git) when the stubs are missing or older than the .proto, and
returns the (messages, services) modules.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "protos"
PROTO = PROTO_DIR / "chorus" / "asr" / "v1" / "asr.proto"
OUT = Path(__file__).resolve().parent / "_generated"


def generate(out: Path = OUT) -> Path:
    try:
        from grpc_tools import protoc
    except ImportError as exc:
        raise RuntimeError("generating gRPC stubs needs grpcio-tools: "
                           "pip install 'chorus-asr[server]'") from exc
    import grpc_tools

    out.mkdir(parents=True, exist_ok=True)
    include = Path(grpc_tools.__file__).parent / "_proto"
    rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={out}",
                      f"--grpc_python_out={out}", str(PROTO)])
    if rc != 0:
        raise RuntimeError(f"protoc failed on {PROTO} (exit {rc})")
    for d in (out / "chorus", out / "chorus" / "asr", out / "chorus" / "asr" / "v1"):
        (d / "__init__.py").touch()
    (out / "STAMP").write_text(hashlib.sha256(PROTO.read_bytes()).hexdigest())
    return out


def generated() -> tuple[ModuleType, ModuleType]:
    stamp = OUT / "STAMP"
    if not stamp.is_file() or stamp.read_text() != hashlib.sha256(PROTO.read_bytes()).hexdigest():
        generate()
    if str(OUT) not in sys.path:
        sys.path.insert(0, str(OUT))
    return (importlib.import_module("chorus.asr.v1.asr_pb2"),
            importlib.import_module("chorus.asr.v1.asr_pb2_grpc"))


if __name__ == "__main__":
    print(generate())
