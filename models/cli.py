"""Model-side commands: `chorus transcribe` (offline files), `chorus features` (front end)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# `chorus bench` subparsers, so other packages' modules can add their own benchmarks
BENCH_SUBCOMMANDS: list[argparse._SubParsersAction] = []


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("features", help="streaming fbank features of audio files (any rate)")
    p.add_argument("audio", nargs="+", type=Path)
    p.add_argument("--chunk-ms", type=float, default=100.0, help="streaming chunk size")
    p.add_argument("--pcen", action="store_true", help="PCEN instead of log compression")
    p.set_defaults(func=run)

    t = sub.add_parser("transcribe", help="transcribe audio files offline (any format, 4-192 kHz)",
                       description="Runs the streaming model path over each file; prints text or "
                                   "one JSON line per file with word timings and confidences. A file "
                                   "that cannot be read is named (stderr; an `error` JSON line) "
                                   "and the rest are still transcribed; exit status 2 then.")
    t.add_argument("audio", nargs="+", type=Path)
    t.add_argument("--bundle", type=Path, default=None,
                   help="model bundle directory (default: the shipped models/pretrained/default)")
    t.add_argument("--format", choices=("text", "jsonl"), default="text")
    t.add_argument("--decoder", choices=("greedy", "beam"), default=None,
                   help="default: the bundle's decoding.decoder")
    t.add_argument("--chunk-ms", type=float, default=None,
                   help="feed the audio in pieces of this many ms (default: whole file)")
    t.add_argument("--vad", action="store_true",
                   help="skip silence: transcribe only the speech the neural VAD finds, each "
                        "segment from a fresh state (word times stay the file's)")
    t.set_defaults(func=run_transcribe)

    ex = sub.add_parser("export", help="export a bundle's streaming step (ONNX, TensorRT, Triton)",
                        description="Writes encoder.onnx (state in/out, dynamic batch and time) "
                                    "into the bundle, a TensorRT engine built from it, or a "
                                    "Triton model repository (sequence batcher, implicit state, "
                                    "decoding model, ensemble).")
    ex.add_argument("--bundle", type=Path, default=None, help="default: the shipped bundle")
    ex.add_argument("--format", choices=("onnx", "tensorrt", "triton"), default="onnx")
    ex.add_argument("--out", default=None,
                    help="onnx / tensorrt: the file, or a directory to write it in under its "
                         "default name (default: inside the bundle); triton: the model "
                         "repository directory (required)")
    ex.add_argument("--fp16", action="store_true", help="TensorRT: build an fp16 engine")
    ex.add_argument("--max-batch", type=int, default=64,
                    help="TensorRT profile batch bound; Triton max_batch_size")
    ex.add_argument("--max-streams", type=int, default=64,
                    help="Triton: streams batched per model instance (oldest.max_candidate_sequences)")
    ex.add_argument("--idle-timeout-s", type=float, default=30.0,
                    help="Triton: a stream idle this long is released (max_sequence_idle_microseconds)")
    ex.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="Triton: where the encoder runs (instance group KIND_CPU / KIND_GPU)")
    ex.add_argument("--decoder", choices=("greedy", "beam"), default="greedy",
                    help="Triton: the decoding model's decoder (greedy CTC runs on numpy alone; "
                         "beam + LM and RNN-T need chorus-asr in Triton's Python environment)")
    ex.set_defaults(func=run_export)

    bench = sub.add_parser("bench", help="benchmarks (JSON + markdown)")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    BENCH_SUBCOMMANDS.append(bench_sub)
    bm = bench_sub.add_parser("model", help="real-time streams per CPU core for bundles")
    bm.add_argument("--bundle", type=Path, action="append", default=None,
                    help="bundle directory; repeat to compare (default: shipped)")
    bm.add_argument("--threads", type=int, default=1)
    bm.add_argument("--decoder", choices=("greedy", "beam"), default="greedy",
                    help="beam: the bundle's beam + LM, timed on eight streams of real speech")
    bm.add_argument("--int8", action="store_true",
                    help="also time each bundle's model in dynamic int8 (serve --int8), side by "
                         "side with fp32")
    bm.add_argument("--json", type=Path, default=None)
    bm.add_argument("--markdown", type=Path, default=None)
    bm.set_defaults(func=run_bench_model)


def run(args: argparse.Namespace) -> int:
    import torch

    from models.audio import load_audio
    from models.features import Fbank, FbankConfig, StreamingFbank

    cfg = FbankConfig(compression="pcen" if args.pcen else "log")
    fbank = Fbank(cfg)
    chunk = max(1, int(cfg.sample_rate * args.chunk_ms / 1000))
    for path in args.audio:
        wave = load_audio(path, sample_rate=cfg.sample_rate)
        offline = fbank(torch.from_numpy(wave))
        stream = StreamingFbank(fbank=fbank)
        parts = [stream.accept(wave[i : i + chunk]) for i in range(0, wave.size, chunk)]
        streamed = torch.cat(parts)
        print(json.dumps({
            "path": str(path), "seconds": round(wave.size / cfg.sample_rate, 3),
            "frames": int(offline.shape[0]), "mel_bins": cfg.num_mel_bins,
            "chunks": len(parts), "max_abs_diff_streaming_vs_offline":
                float((streamed - offline).abs().max()) if offline.numel() else 0.0,
        }))
    return 0


def run_transcribe(args: argparse.Namespace) -> int:
    import torch

    from models.audio import AudioError, load_audio
    from models.bundle import BundleError, load
    from models.streaming import StreamingTranscriber, transcribe_speech
    from models.vad import check_rate, speech_segments

    torch.set_num_threads(1)
    try:
        bundle = load(args.bundle)
    except BundleError as exc:
        raise SystemExit(f"chorus transcribe: {exc}") from exc
    rate = bundle.features.sample_rate
    if args.vad:
        if args.chunk_ms:
            raise SystemExit("chorus transcribe: --vad transcribes whole speech segments; "
                             "leave out --chunk-ms")
        try:
            check_rate(rate)
        except ValueError as exc:
            raise SystemExit(f"chorus transcribe: {exc}") from exc
    failed = 0
    for path in args.audio:
        try:
            wave = load_audio(path, sample_rate=rate)
        except AudioError as exc:  # named, and the other files are still transcribed
            failed += 1
            print(f"chorus: error: {exc}", file=sys.stderr, flush=True)
            if args.format != "text":
                print(json.dumps({"path": str(path), "error": str(exc)}), flush=True)
            continue
        if args.vad:
            hyp = transcribe_speech(bundle, wave, speech_segments(wave, rate), decoder=args.decoder)
        else:
            stream = StreamingTranscriber(bundle, decoder=args.decoder)
            step = int(rate * args.chunk_ms / 1000) if args.chunk_ms else max(wave.size, 1)
            for i in range(0, wave.size, step):
                stream.accept_waveform(wave[i : i + step])
            hyp = stream.finalize()
        if args.format == "text":
            print(hyp.text if len(args.audio) == 1 else f"{path}\t{hyp.text}", flush=True)
        else:
            print(json.dumps({"path": str(path), "text": hyp.text, "confidence": hyp.confidence,
                              "words": [w.__dict__ for w in hyp.words]}), flush=True)
    return 2 if failed else 0  # 2: as for one bad file alone (clients.cli)


def run_bench_model(args: argparse.Namespace) -> int:
    from models.benchmark import BenchConfig, bench_model, markdown
    from models.bundle import BundleError, load

    results = []
    for path in args.bundle or [None]:
        try:
            bundle = load(path)
        except BundleError as exc:
            raise SystemExit(f"chorus bench model: {exc}") from exc
        try:
            for int8 in (False, True) if args.int8 else (False,):
                results.append(bench_model(bundle, BenchConfig(threads=args.threads,
                                                               decoder=args.decoder, int8=int8)))
        except RuntimeError as exc:
            raise SystemExit(f"chorus bench model: {exc}") from exc
    table = markdown(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(table)
    print(table)
    return 0


def run_export(args: argparse.Namespace) -> int:
    import numpy as np

    from models.backends import BackendConfig, BackendUnavailable, make_backend
    from models.bundle import BundleError, load
    from models.export import out_file

    try:
        bundle = load(args.bundle)
    except BundleError as exc:
        raise SystemExit(f"chorus export: {exc}") from exc
    if args.format == "triton":
        return run_export_triton(bundle, args)
    if args.format == "tensorrt":
        from models.backends.trt_backend import build_engine, engine_path

        cfg = BackendConfig(device="cuda", fp16=args.fp16, max_batch=args.max_batch)
        try:
            path = build_engine(bundle, cfg, out_file(args.out, engine_path(bundle, args.fp16)))
        except BackendUnavailable as exc:
            raise SystemExit(f"chorus export: {exc}") from exc
        print(json.dumps({"engine": str(path), "fp16": args.fp16, "max_batch": args.max_batch}))
        return 0
    from models.export.onnx import ONNX_FILE, export_onnx

    path = export_onnx(bundle, out_file(args.out, Path(bundle.path) / ONNX_FILE))
    if bundle.model.output_kind == "encoder":  # RNN-T: the predictor and joiner too
        from models.export.transducer_onnx import export_transducer

        pred_path, join_path = export_transducer(bundle, path.parent)
        print(json.dumps({"predictor": str(pred_path), "joiner": str(join_path)}))
    # verify the file written: onnxruntime vs torch on random features and states, batch 3
    rng = np.random.default_rng(0)
    frames = bundle.decoding.chunk_frames + bundle.model.lookahead_frames
    torch_be = make_backend("torch", bundle)
    inputs = {k: rng.standard_normal(v.shape).astype(np.float32)
              for k, v in torch_be.init_state(3).items()}
    inputs["features"] = (bundle.model.encoder.feat_mean.numpy() + rng.standard_normal(
        (3, frames, bundle.features.num_mel_bins)).astype(np.float32))
    ref = torch_be.step(inputs)
    from models.backends.ort_backend import session

    got = session(path, ["CPUExecutionProvider"], 1).run(None, inputs)
    names = ["outputs", *(f"new_state_{n}" for n in torch_be.state_names)]
    diff = max(float(np.abs(g - ref[n]).max()) for g, n in zip(got, names, strict=True))
    print(json.dumps({"onnx": str(path), "bytes": path.stat().st_size,
                      "max_abs_diff_vs_torch": diff}))
    return 0


def run_export_triton(bundle: object, args: argparse.Namespace) -> int:
    from models.export.triton import TritonOptions, TritonUnavailable, export_triton

    if args.out is None:
        raise SystemExit("chorus export: --format triton needs --out DIR (the Triton model "
                         "repository to write, e.g. --out triton-models)")
    opts = TritonOptions(max_batch=args.max_batch, max_streams=args.max_streams,
                         idle_timeout_s=args.idle_timeout_s, device=args.device,
                         decoder=args.decoder)
    try:
        summary = export_triton(bundle, args.out, opts)
    except (TritonUnavailable, ValueError) as exc:
        raise SystemExit(f"chorus export: {exc}") from exc
    print(json.dumps(summary))
    return 0
