import json
import subprocess
import sys

import numpy as np
import soundfile as sf


def test_features_cli_streaming_equals_offline(tmp_path) -> None:
    rate = 22050
    t = np.arange(rate) / rate
    sf.write(tmp_path / "a.wav", (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), rate)
    proc = subprocess.run([sys.executable, "-m", "clients.cli", "features", str(tmp_path / "a.wav"),
                           "--chunk-ms", "37"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["frames"] == 98 and out["max_abs_diff_streaming_vs_offline"] <= 1e-5


def test_features_cli_reports_unreadable_audio(tmp_path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    proc = subprocess.run([sys.executable, "-m", "clients.cli", "features", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "chorus: error: cannot read audio" in proc.stderr
    assert "Traceback" not in proc.stderr


def tiny_bundle(path, head: str = "ctc"):
    """A random-weight bundle (ctc, gram_ctc or rnnt; rnnt_cold: an RNN-T cold-fused with a
    random character LM; ctc_cmn: CTC with online CMN): enough to exercise the plumbing."""
    from dataclasses import asdict

    import torch

    from models.acoustic import AcousticModel, ModelConfig
    from models.bundle import save
    from models.features import FbankConfig
    from models.lm.neural import BOS, EOS, UNK, NeuralLm, NeuralLmConfig
    from models.nn.cold_fusion import ColdFusionConfig, token_map
    from models.nn.encoder import EncoderConfig
    from models.nn.transducer import TransducerConfig
    from models.tokenizer import DEFAULT_SYMBOLS, CharTokenizer
    from training.grams import gram_tokenizer

    torch.manual_seed(0)
    tok = gram_tokenizer(["th", "he", "ing"]) if head == "gram_ctc" else CharTokenizer()
    cold = None
    if head == "rnnt_cold":
        lm = NeuralLm(NeuralLmConfig(type="lstm", units="char", embed=8, hidden=12,
                                     vocab=[UNK, BOS, EOS, *DEFAULT_SYMBOLS[1:]]))
        cold = ColdFusionConfig(lm=asdict(lm.cfg), token_map=token_map(tok.symbols, lm), dim=8)
    rnnt = head in ("rnnt", "rnnt_cold")
    enc = EncoderConfig(d_model=32, num_layers=1, conv_channels=4,
                        cmn="online" if head == "ctc_cmn" else "global")
    model = AcousticModel(ModelConfig(enc, tok.vocab_size,
                                      head="rnnt" if rnnt else head.removesuffix("_cmn"),  # type: ignore[arg-type]
                                      transducer=TransducerConfig(pred_dim=24, joiner_dim=16,
                                                                  cold_fusion=cold)
                                      if rnnt else None))
    return save(path, model, features=FbankConfig(), tokenizer=tok)


def test_transcribe_cli_jsonl_any_rate_and_chunking_agree(tmp_path) -> None:
    bundle = tiny_bundle(tmp_path / "b")
    rng = np.random.default_rng(0)
    for name, rate in (("a.wav", 8000), ("b.flac", 44100)):
        sf.write(tmp_path / name, (0.1 * rng.standard_normal(rate * 2)).astype(np.float32), rate)
    outs = []
    for extra in ([], ["--chunk-ms", "70"]):
        proc = subprocess.run([sys.executable, "-m", "clients.cli", "transcribe", "--bundle",
                               str(bundle), "--format", "jsonl", str(tmp_path / "a.wav"),
                               str(tmp_path / "b.flac"), *extra],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        lines = [json.loads(line) for line in proc.stdout.splitlines()]
        assert [x["path"] for x in lines] == [str(tmp_path / "a.wav"), str(tmp_path / "b.flac")]
        for x in lines:
            assert set(x) == {"path", "text", "confidence", "words"}
            assert " ".join(w["word"] for w in x["words"]) == x["text"]
            assert all(set(w) == {"word", "start", "end", "confidence"} for w in x["words"])
            assert all(0 <= w["start"] < w["end"] <= 2.0 for w in x["words"])
        outs.append(lines)
    assert outs[0] == outs[1]


def test_transcribe_cli_errors_are_specific(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "clients.cli", "transcribe", "--bundle",
                           str(tmp_path / "nope"), "x.wav"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "bundle directory not found" in proc.stderr
    bundle = tiny_bundle(tmp_path / "b")
    proc = subprocess.run([sys.executable, "-m", "clients.cli", "transcribe", "--bundle", str(bundle),
                           str(tmp_path / "missing.wav")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "missing.wav" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_model_cli(tmp_path) -> None:
    bundle = tiny_bundle(tmp_path / "b")
    proc = subprocess.run([sys.executable, "-m", "clients.cli", "bench", "model", "--bundle",
                           str(bundle), "--json", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (r,) = json.loads((tmp_path / "r.json").read_text())
    assert r["chunk_ms"] == 320 and r["sweep"][0]["batch"] == 1
    assert r["realtime_streams_per_core"] >= 1 and "| real-time streams / core |" in proc.stdout


def test_bench_model_int8_times_fp32_and_int8_side_by_side(tmp_path) -> None:
    bundle = tiny_bundle(tmp_path / "b")
    proc = subprocess.run([sys.executable, "-m", "clients.cli", "bench", "model", "--bundle",
                           str(bundle), "--int8", "--json", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    fp32, int8 = json.loads((tmp_path / "r.json").read_text())
    assert (fp32["int8"], int8["int8"]) == (False, True)
    assert fp32["parameters"] == int8["parameters"]  # the model's size, not its storage
    assert all(r["sweep"] and r["realtime_streams_per_core"] >= 1 for r in (fp32, int8))
    assert f"| {bundle} (int8) |" in proc.stdout and f"| {bundle} |" in proc.stdout


def test_bench_model_beam_times_the_bundles_beam_and_lm_on_speech(tmp_path) -> None:
    """--decoder beam: the shipped bundle's beam + 3-gram is timed over the model's outputs for
    real (espeak-ng) speech, every chunk of it, and the report says which decoder it timed.
    (How many streams fit is the benchmark's to measure, not a test's to assert.)"""
    from models.benchmark import BenchConfig, bench_model, speech_outputs
    from models.bundle import load

    bundle = load(None)
    outs = speech_outputs(bundle)
    width = (bundle.tokenizer.vocab_size if bundle.model.output_kind == "log_probs"
             else bundle.model.head.cfg.joiner_dim)  # CTC log-probs / RNN-T joiner-space frames
    assert len(outs) >= 10 and all(o.shape[1] == width for o in outs)
    r = bench_model(bundle, BenchConfig(decoder="beam", repeats=2, batches=(1, 2, 4)))
    assert r["decoder"] == "beam" and r["per_stream_ms"] > 0 and len(r["sweep"]) >= 1
    assert r["beam_decode_ms"] > 0 and r["beam_decode_alone_ms"] > 0


def test_transcribe_cli_vad_skips_a_long_silence_and_keeps_file_times(tmp_path) -> None:
    """Shipped model, two espeak commands 8 s apart: with --vad the transcript has both, every
    word in file seconds and none inside the silence; --vad with --chunk-ms is refused."""
    parts = []
    for i, text in enumerate(["turn on the lights", "set a timer for ten minutes"]):
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(tmp_path / f"{i}.wav"), text],
                       check=True)
        parts.append(sf.read(tmp_path / f"{i}.wav", dtype="float32")[0])
    rate = sf.info(tmp_path / "0.wav").samplerate
    lead, gap = np.zeros(rate // 2, np.float32), np.zeros(8 * rate, np.float32)
    sf.write(tmp_path / "both.wav", np.concatenate([lead, parts[0], gap, parts[1], lead]), rate)
    gap_start = (lead.size + parts[0].size) / rate
    proc = subprocess.run([sys.executable, "-m", "clients.cli", "transcribe", "--vad", "--format",
                           "jsonl", str(tmp_path / "both.wav")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert "lights" in out["text"] and "timer" in out["text"], out["text"]
    words = out["words"]
    assert all(not gap_start + 0.3 < w["start"] < gap_start + gap.size / rate for w in words)
    assert words[0]["start"] > 0.4  # file seconds: after the leading half second
    assert min(w["start"] for w in words if w["word"] == "set") > gap_start + 8.0
    proc = subprocess.run([sys.executable, "-m", "clients.cli", "transcribe", "--vad",
                           "--chunk-ms", "100", str(tmp_path / "both.wav")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "leave out --chunk-ms" in proc.stderr


def test_transcribe_cli_goes_on_past_a_bad_file(tmp_path) -> None:
    """`chorus transcribe a.wav bad.wav b.wav`: a and b are transcribed (the same text as each
    alone), bad.wav is named on stderr and as an `error` line in the JSON lines, and the exit
    status says that one input failed."""
    bundle = tiny_bundle(tmp_path / "b")
    rng = np.random.default_rng(1)
    for name in ("a.wav", "b.wav"):
        sf.write(tmp_path / name, (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
    (tmp_path / "bad.wav").write_bytes(b"RIFF but not audio")
    files = [str(tmp_path / n) for n in ("a.wav", "bad.wav", "b.wav")]

    def run(*paths: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "clients.cli", "transcribe", "--bundle",
                               str(bundle), "--format", "jsonl", *paths],
                              capture_output=True, text=True, timeout=120)

    proc = run(*files)
    assert proc.returncode == 2, proc.stderr
    assert "bad.wav" in proc.stderr and "cannot read audio" in proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [x["path"] for x in lines] == files
    assert "cannot read audio" in lines[1]["error"] and "text" not in lines[1]
    for i in (0, 2):
        alone = json.loads(run(files[i]).stdout)
        assert lines[i] == alone
