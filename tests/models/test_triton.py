"""`chorus export --format triton`: every config.pbtxt parses with Triton's own model_config
protobuf (tritonclient) and agrees with the ONNX model's real inputs and outputs; the
repository, run by a stand-in for Triton's sequence batcher (tests/models/triton_emulator.py),
gives what the Chorus path gives for the same audio. tritonserver itself is not run here."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from tritonclient.grpc import model_config_pb2 as pb

from models.bundle import CTC_BUNDLE, load
from models.export.triton import DECODER, ENCODER, ENSEMBLE, TritonOptions, export_triton, triton_requests
from tests.models.test_cli import tiny_bundle
from tests.models.triton_emulator import (
    ORT_TYPES,
    PythonSequenceModel,
    Repository,
    Request,
    parse_config,
    result_json,
)

SENTENCES = ("please call stella and ask her to bring these things",
             "the birch canoe slid on the smooth planks")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("triton")
    # the CTC model: the decoder checks below feed it hand-made CTC log-probs
    shutil.copytree(CTC_BUNDLE, root / "default", ignore=shutil.ignore_patterns("*.onnx", "*.plan"))
    bundle = load(root / "default")
    summary = export_triton(bundle, root / "repo", TritonOptions(max_batch=8, max_streams=16,
                                                                 idle_timeout_s=12.5))
    return bundle, root / "repo", summary


def ort_io(path):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def info(x):
        assert isinstance(x.shape[0], str), f"{x.name}: batch dimension must be dynamic"
        return ORT_TYPES[x.type], [d if isinstance(d, int) else -1 for d in x.shape[1:]]

    return ({x.name: info(x) for x in sess.get_inputs()}, {x.name: info(x) for x in sess.get_outputs()})


def test_configs_parse_with_triton_protobuf_and_match_the_onnx_model(exported) -> None:
    bundle, repo, summary = exported
    assert summary["max_abs_diff_vs_torch"] < 1e-4  # START resets, READY holds (3 streams)
    cfg = {name: parse_config(repo / name / "config.pbtxt") for name in (ENCODER, DECODER, ENSEMBLE)}
    enc, dec, ens = cfg[ENCODER], cfg[DECODER], cfg[ENSEMBLE]
    kinds = pb.ModelSequenceBatching.Control

    # encoder: onnxruntime, sequence batcher oldest, implicit state, controls
    assert (enc.backend, enc.max_batch_size) == ("onnxruntime", 8)
    sb = enc.sequence_batching
    assert sb.WhichOneof("strategy_choice") == "oldest" and sb.oldest.max_candidate_sequences == 16
    assert sb.oldest.max_queue_delay_microseconds == 0 and sb.max_sequence_idle_microseconds == 12_500_000
    controls = {c.name: c.control[0] for c in sb.control_input}
    assert {n: c.kind for n, c in controls.items()} == {
        "START": kinds.CONTROL_SEQUENCE_START, "READY": kinds.CONTROL_SEQUENCE_READY,
        "END": kinds.CONTROL_SEQUENCE_END, "CORRID": kinds.CONTROL_SEQUENCE_CORRID}
    names = list(bundle.model.init_state(1))
    assert [(s.input_name, s.output_name) for s in sb.state] == [
        (f"state_{n}", f"new_state_{n}") for n in names]
    ins, outs = ort_io(repo / ENCODER / "1" / "model.onnx")
    # Triton's onnxruntime backend: model inputs == config inputs + controls + state inputs
    assert set(ins) == {i.name for i in enc.input} | set(controls) | {s.input_name for s in sb.state}
    for io in enc.input:
        assert ins[io.name] == (io.data_type, list(io.dims))
    for io in enc.output:
        assert outs[io.name] == (io.data_type, list(io.dims))
    assert list(enc.input[0].dims) == [-1, bundle.features.num_mel_bins]
    assert list(enc.output[0].dims) == [-1, bundle.tokenizer.vocab_size]
    for s in sb.state:
        (init,) = s.initial_state
        assert init.zero_data and list(init.dims) == list(s.dims) and init.data_type == s.data_type
        assert ins[s.input_name] == outs[s.output_name] == (s.data_type, list(s.dims))
        assert list(s.dims) == list(bundle.model.init_state(1)[s.input_name[6:]].shape[1:])
    for name, c in controls.items():
        want = c.data_type if c.kind == kinds.CONTROL_SEQUENCE_CORRID else pb.TYPE_FP32
        assert ins[name] == (want, [1])
        if c.kind != kinds.CONTROL_SEQUENCE_CORRID:
            assert list(c.fp32_false_true) == [0.0, 1.0]

    # decoder: Python backend, same sequence batcher, input = the encoder's output
    assert dec.backend == "python" and (repo / DECODER / "1" / "model.py").is_file()
    assert dec.sequence_batching.WhichOneof("strategy_choice") == "oldest"
    assert {c.name for c in dec.sequence_batching.control_input} == {"START", "END", "CORRID"}
    assert (dec.input[0].data_type, list(dec.input[0].dims)) == outs["outputs"]
    assert dec.parameters["implementation"].string_value == "numpy"
    assert float(dec.parameters["frame_seconds"].string_value) == bundle.frame_seconds
    assert (repo / DECODER / "1" / "bundle" / "tokens.txt").is_file()

    # ensemble: every map names a real tensor of its step's model; types and dims agree
    assert ens.platform == "ensemble" and (repo / ENSEMBLE / "1").is_dir()
    assert ens.max_batch_size <= min(enc.max_batch_size, dec.max_batch_size)
    tensors = {i.name: (i.data_type, list(i.dims)) for i in ens.input}
    for step in ens.ensemble_scheduling.step:
        model = cfg[step.model_name]
        model_in = {i.name: (i.data_type, list(i.dims)) for i in model.input}
        for key, value in step.input_map.items():
            assert tensors[value] == model_in[key]
        for key, value in step.output_map.items():
            tensors[value] = next((o.data_type, list(o.dims)) for o in model.output if o.name == key)
    assert all(tensors[o.name] == (o.data_type, list(o.dims)) for o in ens.output)

    facts = json.loads((repo / "chorus.json").read_text())
    assert facts["chunk_frames"] == bundle.decoding.chunk_frames
    assert len(facts["pad_frame"]) == bundle.features.num_mel_bins


def speech(tmp_path, text: str, name: str) -> np.ndarray:
    from models.audio import load_audio

    wav = tmp_path / f"{name}.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), text], check=True)
    return load_audio(wav, sample_rate=16_000)


def test_repository_runs_two_streams_batched_like_chorus(exported, tmp_path) -> None:
    """Two interleaved streams through the emulated sequence batcher: the encoder outputs
    equal torch's per stream, the Python decoder's results equal models.decoding's on the same
    outputs (greedy numpy, then beam + LM via the chorus package), text equals chorus's."""
    from models.backends import make_backend
    from models.decoding import bundle_decoder
    from models.streaming import StreamingTranscriber

    bundle, repo, _ = exported
    audio = {corrid: speech(tmp_path, text, str(corrid))
             for corrid, text in zip((11, 22), SENTENCES, strict=True)}
    plans = {c: triton_requests(bundle, a) for c, a in audio.items()}
    triton = Repository(repo)
    got: dict[int, list[dict]] = {c: [] for c in plans}
    for t in range(max(len(p) for p in plans.values())):
        batch = [Request(c, p[t]["sequence_start"], p[t]["sequence_end"], {"features": p[t]["features"]})
                 for c, p in plans.items() if t < len(p)]
        for req, tensors in zip(batch, triton.run(batch), strict=True):
            got[req.corrid].append(tensors)
    torch_be = make_backend("torch", bundle)
    for corrid, steps in got.items():
        state = torch_be.init_state(1)
        greedy = bundle_decoder(bundle, "greedy")
        for req, tensors in zip(plans[corrid], steps, strict=True):
            ref = torch_be.step({"features": req["features"], **state})
            state = {k[4:]: v for k, v in ref.items() if k.startswith("new_state_")}
            enc = tensors["encoder_outputs"]
            assert np.abs(enc - ref["outputs"]).max() < 1e-3
            greedy.update(torch.from_numpy(enc[0]))
        results = [result_json(s) for s in steps]
        assert [r["final"] for r in results] == [False] * (len(results) - 1) + [True]
        final = results[-1]
        assert {k: v for k, v in final.items() if k != "final"} == greedy.finalize().to_dict()
        assert all(final["text"].startswith(r["text"]) for r in results)  # greedy never revises
        solo = StreamingTranscriber(bundle, decoder="greedy")
        solo.accept_waveform(audio[corrid])
        assert final["text"] == solo.finalize().text and final["text"]

    # the same encoder outputs through the decoder model with implementation chorus (beam + LM)
    config = parse_config(repo / DECODER / "config.pbtxt")
    config.parameters["implementation"].string_value = "chorus"
    config.parameters["decoder"].string_value = "beam"
    beam_model = PythonSequenceModel(config, repo / DECODER)
    for corrid, steps in got.items():
        beam = bundle_decoder(bundle, "beam")
        for req, tensors in zip(plans[corrid], steps, strict=True):
            (out,) = beam_model.execute([Request(corrid, req["sequence_start"], req["sequence_end"],
                                                 {"outputs": tensors["encoder_outputs"]})])
            beam.update(torch.from_numpy(tensors["encoder_outputs"][0]))
        assert {k: v for k, v in result_json(out).items() if k != "final"} == beam.finalize().to_dict()


def test_empty_stream_is_one_padded_request(exported) -> None:
    bundle, repo, _ = exported
    (req,) = triton_requests(bundle, np.zeros(0, np.float32))
    frames = bundle.model.subsampling + bundle.model.lookahead_frames
    assert req["features"].shape == (1, frames, bundle.features.num_mel_bins)
    assert req["sequence_start"] and req["sequence_end"]
    (out,) = Repository(repo).run([Request(3, True, True, {"features": req["features"]})])
    assert result_json(out) == {"text": "", "confidence": 0.0, "words": [], "final": True}


def test_decoder_model_restarts_drops_idle_streams_and_fails_one_request(exported) -> None:
    _, repo, _ = exported
    model = PythonSequenceModel(parse_config(repo / DECODER / "config.pbtxt"), repo / DECODER)
    vocab = 29
    word = np.full((1, 4, vocab), -30.0, np.float32)
    word[0, [0, 1, 2, 3], [1, 3, 22, 0]] = 0.0  # space "a" "t" blank -> " at"
    (first,) = model.execute([Request(5, True, False, {"outputs": word})])
    assert result_json(first)["text"] == "at"
    (again,) = model.execute([Request(5, True, False, {"outputs": word})])  # START: a new stream
    assert result_json(again)["text"] == "at"
    bad = {"outputs": np.zeros((1, 4), np.float32)}  # wrong rank: this request fails alone
    ok, failed = model.execute([Request(5, False, True, {"outputs": word}), Request(6, True, False, bad)])
    assert result_json(ok) == {**result_json(ok), "text": "at at", "final": True}
    assert "chorus_decoder" in failed["error"]
    assert 5 not in model.model.streams  # END freed it
    model.execute([Request(7, True, False, {"outputs": word})])
    decoder, seen = model.model.streams[7]
    model.model.streams[7] = (decoder, seen - 13.0)  # quiet past max_sequence_idle (12.5 s)
    model.execute([Request(8, True, False, {"outputs": word})])
    assert 7 not in model.model.streams and 8 in model.model.streams  # 7 went quiet: dropped


def test_model_config_protobuf_without_grpcio_and_without_tritonclient() -> None:
    code = ("import sys; sys.modules['grpc'] = None\n"
            "from models.export.triton import model_config_pb2\n"
            "print(model_config_pb2().ModelConfig.DESCRIPTOR.full_name)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "inference.ModelConfig", proc.stderr
    code = ("import sys; sys.modules['tritonclient'] = None\n"
            "from models.export.triton import model_config_pb2, TritonUnavailable\n"
            "try:\n    model_config_pb2()\nexcept TritonUnavailable as e:\n    print(e)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "pip install tritonclient" in proc.stdout, proc.stderr


def test_export_cli_triton(tmp_path) -> None:
    """The CLI on an RNN-T bundle (its decoding needs the chorus package); errors are one line."""
    bundle = tiny_bundle(tmp_path / "b", head="rnnt")
    cmd = [sys.executable, "-m", "clients.cli", "export", "--bundle", str(bundle), "--format", "triton"]
    proc = subprocess.run([*cmd, "--out", str(tmp_path / "repo"), "--device", "cuda", "--max-batch", "4"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["implementation"] == "chorus" and summary["max_abs_diff_vs_torch"] < 1e-4
    enc = parse_config(tmp_path / "repo" / ENCODER / "config.pbtxt")
    assert enc.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU and enc.max_batch_size == 4
    dec = parse_config(tmp_path / "repo" / DECODER / "config.pbtxt")
    assert list(dec.input[0].dims) == [-1, 16]  # joiner-space encoder frames (joiner_dim 16)
    for extra, message in (([], "--format triton needs --out DIR"),
                           (["--out", str(bundle / "bundle.json")], "is a file")):
        proc = subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr


def test_triton_defaults_are_the_servers() -> None:
    """Exported without options, Triton batches, admits and times out as `chorus serve` does."""
    from clients.cli import build_parser
    from server.app import ServerConfig
    from server.session import Limits

    opts, server = TritonOptions(), ServerConfig()
    assert (opts.max_batch, opts.max_streams, opts.idle_timeout_s, opts.threads) == (
        server.max_batch, server.max_streams, Limits().idle_timeout_s, server.threads)
    args = build_parser().parse_args(["export", "--format", "triton", "--out", "x"])
    assert (args.max_batch, args.max_streams, args.idle_timeout_s) == (
        opts.max_batch, opts.max_streams, opts.idle_timeout_s)
