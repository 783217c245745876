"""Backends: onnxruntime equals torch chunk by chunk; missing libraries fail loudly."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from models.backends import BackendConfig, BackendUnavailable, make_backend
from models.bundle import DEFAULT_BUNDLE, load
from tests.models.test_cli import tiny_bundle
from training.eval.parity import stream_through


@pytest.fixture(scope="module")
def default_copy(tmp_path_factory):
    """The shipped bundle copied, so encoder.onnx is written outside the repository."""
    dst = tmp_path_factory.mktemp("bundle") / "default"
    shutil.copytree(DEFAULT_BUNDLE, dst, ignore=shutil.ignore_patterns("*.onnx", "*.plan"))
    return load(dst)


@pytest.mark.parametrize("voice", [("espeak-ng", "en-us+m3"), ("flite", "slt")])
def test_onnxruntime_equals_torch_on_speech(default_copy, tmp_path, voice) -> None:
    from models.audio import load_audio

    engine, name = voice
    wav = tmp_path / "a.wav"
    text = "please call stella and ask her to bring these things with her from the store"
    cmd = (["espeak-ng", "-v", name, "-w", str(wav), text] if engine == "espeak-ng"
           else ["flite", "-voice", name, "-t", text, "-o", str(wav)])
    subprocess.run(cmd, check=True)
    audio = load_audio(wav, sample_rate=16_000)
    ref, ref_text = stream_through(make_backend("torch", default_copy), default_copy, audio)
    got, got_text = stream_through(make_backend("onnxruntime", default_copy), default_copy, audio)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(ref, got, strict=True))
    assert diff < 1e-3, diff  # log-probabilities, fp32, a few hundred frames of recurrence
    assert got_text == ref_text


def test_onnx_batch_rows_are_independent(tmp_path) -> None:
    bundle = load(tiny_bundle(tmp_path / "b"))
    ort_be = make_backend("onnxruntime", bundle)
    rng = np.random.default_rng(1)
    frames = bundle.decoding.chunk_frames + bundle.model.lookahead_frames
    inputs = {k: rng.standard_normal(v.shape).astype(np.float32)
              for k, v in ort_be.init_state(3).items()}
    inputs["features"] = rng.standard_normal((3, frames, 80)).astype(np.float32)
    batched = ort_be.step(inputs)
    for i in range(3):
        single = ort_be.step({k: v[i : i + 1] for k, v in inputs.items()})
        for k, v in single.items():
            np.testing.assert_allclose(batched[k][i : i + 1], v, atol=1e-5)
    # other chunk sizes than the exported one (dynamic time axis)
    for t in (4, 16, 64):
        x = {**ort_be.init_state(2), "features": rng.standard_normal(
            (2, t + bundle.model.lookahead_frames, 80)).astype(np.float32)}
        ref = make_backend("torch", bundle).step(x)
        got = ort_be.step(x)
        assert got["outputs"].shape == (2, t // 4, bundle.tokenizer.vocab_size)
        assert all(np.abs(got[k] - ref[k]).max() < 1e-4 for k in ref)


def test_missing_libraries_and_devices_fail_with_what_to_install(tmp_path) -> None:
    bundle = load(tiny_bundle(tmp_path / "b"))
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable, match="CUDA build of torch"):
            make_backend("torch", bundle, BackendConfig(device="cuda"))
        with pytest.raises(BackendUnavailable, match="onnxruntime-gpu"):
            make_backend("onnxruntime", bundle, BackendConfig(device="cuda"))
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailable, match="pip install tensorrt"):
            make_backend("tensorrt", bundle, BackendConfig(device="cuda"))
    with pytest.raises(ValueError, match="backend must be one of"):
        make_backend("openvino", bundle)


def test_export_cli_verifies_against_torch(tmp_path) -> None:
    import json
    import sys

    bundle = tiny_bundle(tmp_path / "b")
    proc = subprocess.run([sys.executable, "-m", "clients.cli", "export", "--bundle", str(bundle)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["max_abs_diff_vs_torch"] < 1e-4 and (bundle / "encoder.onnx").is_file()
    import onnx

    graph = onnx.load(str(bundle / "encoder.onnx")).graph
    assert [i.name for i in graph.input] == ["features", "state_conv1", "state_conv2", "state_rnn_h"]
    assert [o.name for o in graph.output] == ["outputs", "new_state_conv1", "new_state_conv2",
                                              "new_state_rnn_h"]


def test_export_cli_out_may_be_a_directory(tmp_path) -> None:
    """`--out DIR` (existing, or new with a trailing slash) writes DIR/encoder.onnx, verifies
    that file and leaves the bundle untouched; no IsADirectoryError traceback."""
    import json
    import sys

    bundle = tiny_bundle(tmp_path / "b")
    (tmp_path / "existing").mkdir()
    for out, where in ((tmp_path / "existing", tmp_path / "existing"),
                       (f"{tmp_path / 'fresh'}/", tmp_path / "fresh")):
        proc = subprocess.run([sys.executable, "-m", "clients.cli", "export", "--bundle", str(bundle),
                               "--out", str(out)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        got = json.loads(proc.stdout.splitlines()[-1])
        assert got["onnx"] == str(where / "encoder.onnx") and (where / "encoder.onnx").is_file()
        assert got["max_abs_diff_vs_torch"] < 1e-4
    assert not (bundle / "encoder.onnx").exists()  # the verification ran the file written


def test_stale_onnx_export_is_redone(tmp_path) -> None:
    """An encoder.onnx exported from other weights (e.g. before a retrain) is not used."""
    import torch
    from safetensors.torch import load_file, save_file

    from models.backends.ort_backend import onnx_path
    from models.export.onnx import is_current

    root = tiny_bundle(tmp_path / "b")
    first = onnx_path(load(root))
    assert is_current(load(root), first)
    weights = load_file(str(root / "model.safetensors"))
    save_file({k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()},
              str(root / "model.safetensors"))
    retrained = load(root)
    assert not is_current(retrained, first)
    be = make_backend("onnxruntime", retrained)
    ref = make_backend("torch", retrained)
    x = {**ref.init_state(1), "features": torch.randn(
        1, 16 + retrained.model.lookahead_frames, 80).numpy()}
    np.testing.assert_allclose(be.step(x)["outputs"], ref.step(x)["outputs"], atol=1e-4)


def test_onnxruntime_carries_the_online_cmn_state_like_torch(tmp_path) -> None:
    """An encoder with online CMN (its running sum and count are streaming state): onnxruntime
    equals torch over several chunks of different sizes, the state carried through each."""
    from models.acoustic import AcousticModel, ModelConfig
    from models.bundle import DecodingDefaults, save
    from models.features import FbankConfig
    from models.nn.encoder import EncoderConfig
    from models.tokenizer import CharTokenizer

    torch.manual_seed(0)
    cfg = ModelConfig(EncoderConfig(d_model=32, num_layers=1, conv_channels=4, cmn="online",
                                    cmn_prior_frames=10), CharTokenizer().vocab_size)
    model = AcousticModel(cfg)
    with torch.no_grad():
        model.encoder.set_normalizer(torch.randn(80), torch.rand(80) + 0.5)
    bundle = load(save(tmp_path / "b", model, features=FbankConfig(), tokenizer=CharTokenizer(),
                       decoding=DecodingDefaults(chunk_frames=16)))
    ort_be, torch_be = make_backend("onnxruntime", bundle), make_backend("torch", bundle)
    rng = np.random.default_rng(2)
    s_ort, s_torch = ort_be.init_state(2), torch_be.init_state(2)
    assert {"state_cmn_sum", "state_cmn_count"} <= set(s_ort)
    for t in (16, 4, 32, 16):
        feats = (3 * rng.standard_normal((2, t + bundle.model.lookahead_frames, 80)) + 4
                 ).astype(np.float32)
        got, ref = ort_be.step({**s_ort, "features": feats}), torch_be.step({**s_torch,
                                                                             "features": feats})
        assert all(np.abs(got[k] - ref[k]).max() < 1e-4 for k in ref)
        s_ort = {k: got["new_" + k] for k in s_ort}
        s_torch = {k: ref["new_" + k] for k in s_torch}
    assert float(s_torch["state_cmn_count"][0, 0]) == 16 + 4 + 32 + 16


def test_onnx_export_appears_only_whole(tmp_path, monkeypatch) -> None:
    """encoder.onnx comes into being by one rename of a file that already holds its metadata
    (two server workers exporting one bundle on first use raced: one read the other's file
    before its metadata was written, KeyError 'state_names'); no temporary file is left."""
    import os

    import onnx

    from models.export.onnx import export_onnx

    bundle = load(tiny_bundle(tmp_path / "b"))
    final = tmp_path / "b" / "encoder.onnx"
    renames = []
    real = os.replace

    def replace(src, dst) -> None:
        assert not final.exists()  # nothing was written under the final name before
        meta = {p.key for p in onnx.load(str(src)).metadata_props}
        renames.append((Path(src).name, Path(dst), {"state_names", "weights_sha256"} <= meta))
        real(src, dst)

    monkeypatch.setattr("models.export.onnx.os.replace", replace)
    assert export_onnx(bundle) == final
    assert len(renames) == 1 and renames[0][1] == final and renames[0][2]
    assert sorted(p.name for p in final.parent.iterdir() if p.name.endswith(".tmp")) == []
