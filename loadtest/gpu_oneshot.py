"""One-shot GPU serving capacity on a lent device machine: Batch Dispatch with the model on
the GPU, side by side with the same machine's CPU, in one short prepared run.

A lent machine (docs/training.md: one command of at most 10 minutes, about 15 in all; no
espeak-ng, no Lhotse, no package index; PyTorch with CUDA, grpcio, onnxruntime without its
CUDA provider) gets real speech as a small array file made here, and runs the in-process
benchmark (`chorus bench dispatch`: the server's own Stream / Session path, sockets aside)
for torch on cuda and torch on cpu, eager and batch size 1, over a ramp of streams:

    python -m loadtest.gpu_oneshot prepare --carry .gpu-serve                    # here
    # device run, carry [".gpu-serve"], from the repository root there:
    PYTHONUNBUFFERED=1 python3 -m loadtest.gpu_oneshot run --carry .gpu-serve --out "$OUT"
    # here: the JSON / markdown / PNG come back under files_at: copy them to docs/benchmarks/

onnxruntime's CUDA provider is measured too when the machine's onnxruntime has it (the
onnxruntime-gpu wheel is far over the 64 MiB a call can carry, so today it is skipped with a
line saying so). `run --device cpu` is the same path on this machine (the test uses it).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

SPEECH = "speech.npz"
JOB = "job.json"


def prepare(carry: Path, streams: tuple[int, ...], seconds: float) -> dict[str, Any]:
    """Speak the benchmark's sentences here (espeak-ng) into carry/speech.npz, and the job."""
    from loadtest.dispatch_bench import load_audio_pool

    carry.mkdir(parents=True, exist_ok=True)
    pool = load_audio_pool(None)
    np.savez_compressed(carry / SPEECH, *[(np.clip(a, -1, 1) * 32767).astype(np.int16)
                                          for a in pool])
    job = {"streams": list(streams), "seconds": seconds, "clips": len(pool),
           "audio_s": round(sum(a.size for a in pool) / 16_000, 1)}
    (carry / JOB).write_text(json.dumps(job, indent=1) + "\n")
    return job


def load_pool(carry: Path) -> list[np.ndarray]:
    with np.load(carry / SPEECH) as z:
        return [z[k].astype(np.float32) / 32768 for k in z.files]


def _cuda_backends() -> tuple[list[str], list[str]]:
    """(backends that can run on cuda here, lines saying why others cannot)."""
    import torch

    ok, why = [], []
    if torch.cuda.is_available():
        ok.append("torch")
    else:
        why.append(f"torch {torch.__version__}: no CUDA device")
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            ok.append("onnxruntime")
        else:
            why.append(f"onnxruntime {ort.__version__}: no CUDAExecutionProvider in this build "
                       "(onnxruntime-gpu is too large to carry to the device machine)")
    except ImportError:
        why.append("onnxruntime: not installed")
    return ok, why


def run(carry: Path, out: Path, device: str = "cuda", streams: tuple[int, ...] | None = None,
        seconds: float | None = None, progress: bool = True) -> list[Path]:
    """The benchmark on `device` (and, for cuda, torch on this machine's CPU beside it)."""
    from loadtest.dispatch_bench import BenchDispatchConfig, markdown, run_benchmark, write

    job = json.loads((carry / JOB).read_text())
    pool = load_pool(carry)
    ramp = tuple(streams or job["streams"])
    secs = float(seconds if seconds is not None else job["seconds"])
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    plan: list[tuple[str, tuple[str, ...]]] = []
    notes: list[str] = []
    if device == "cuda":
        backends, notes = _cuda_backends()
        if not backends:
            raise SystemExit("gpu_oneshot run: nothing can run on cuda here: " + "; ".join(notes))
        plan += [("cuda", tuple(backends)), ("cpu", ("torch",))]
    else:
        plan.append(("cpu", ("torch",)))
    for dev, backends in plan:
        cfg = BenchDispatchConfig(streams=ramp, policies=("eager", "none"), backends=backends,
                                  seconds=secs, threads=1, device=dev)
        t0 = time.perf_counter()
        result = run_benchmark(None, cfg, progress=progress, pool=pool)
        result["device_name"] = _device_name(dev)
        result["notes"] = notes
        result["wall_s"] = round(time.perf_counter() - t0, 1)
        paths += write(result, out, f"gpu-capacity-{dev}")
        if progress:
            print(markdown(result), flush=True)
    return paths


def _device_name(device: str) -> str:
    import platform

    import torch

    if device == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.gpu_oneshot",
                                description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("prepare", help="here: the speech and the job for the device run")
    pr.add_argument("--carry", type=Path, default=Path(".gpu-serve"))
    pr.add_argument("--streams", default="64,128,256,512,1024",
                    help="the ramp of concurrent real-time streams")
    pr.add_argument("--seconds", type=float, default=8.0, help="measured seconds per point")
    rn = sub.add_parser("run", help="there: the benchmark, results under --out")
    rn.add_argument("--carry", type=Path, default=Path(".gpu-serve"))
    rn.add_argument("--out", type=Path, required=True)
    rn.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    rn.add_argument("--streams", default=None, help="override the job's ramp, e.g. 1,2")
    rn.add_argument("--seconds", type=float, default=None)
    rn.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.cmd == "prepare":
        ramp = tuple(int(x) for x in args.streams.split(",") if x)
        print(json.dumps(prepare(args.carry, ramp, args.seconds)))
        return 0
    if not (args.carry / JOB).is_file():
        raise SystemExit(f"gpu_oneshot run: {args.carry / JOB} not found: run `prepare` here "
                         f"and carry {args.carry}")
    ramp = tuple(int(x) for x in args.streams.split(",") if x) if args.streams else None
    paths = run(args.carry, args.out, args.device, ramp, args.seconds,
                progress=not args.no_progress)
    print(json.dumps({"wrote": [str(x) for x in paths]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
