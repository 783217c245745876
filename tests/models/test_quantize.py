"""int8 (models/quantize.py): the shipped model's GRU / Linear layers quantized, close to fp32 on
real speech streamed through the torch backend; wrong backends and models named."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch
from torch import nn

from models.backends import BackendConfig, make_backend
from models.bundle import load
from models.quantize import quantize_int8
from training.eval.metrics import error_rates
from training.eval.parity import stream_through

TEXT = "please call stella and ask her to bring these things with her from the store"


def test_int8_replaces_recurrent_and_linear_layers_and_leaves_the_original() -> None:
    bundle = load(None)
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    q = quantize_int8(bundle.model)
    kinds = {type(m).__module__ + "." + type(m).__name__ for m in q.modules()}
    assert "torch.ao.nn.quantized.dynamic.modules.rnn.GRU" in kinds
    assert "torch.ao.nn.quantized.dynamic.modules.linear.Linear" in kinds
    assert not any(type(m) is nn.GRU or type(m) is nn.Linear for m in q.modules())
    after = bundle.model.state_dict()  # the fp32 model is a separate, unchanged copy
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(type(m) is nn.GRU for m in bundle.model.modules())


@pytest.mark.parametrize("voice", [("espeak-ng", "en-us+m3"), ("flite", "slt")])
def test_int8_streams_real_speech_close_to_fp32(tmp_path, voice) -> None:
    """Chunk by chunk through the torch backend, as the server runs it: the int8 model's
    token probabilities stay near fp32's (an RNN-T's: its joiner's over each frame, from the
    start predictor state); its greedy transcript is within a few characters of fp32's (CER:
    one flipped word boundary, "calstely and" -> "calstelin", costs the RNN-T default two
    words of 13 but one character) and, against the text spoken, within two words of fp32's."""
    from models.audio import load_audio

    engine, name = voice
    wav = tmp_path / "a.wav"
    cmd = (["espeak-ng", "-v", name, "-w", str(wav), TEXT] if engine == "espeak-ng"
           else ["flite", "-voice", name, "-t", TEXT, "-o", str(wav)])
    subprocess.run(cmd, check=True)
    audio = load_audio(wav, sample_rate=16_000)
    bundle = load(None)
    ref, ref_text = stream_through(make_backend("torch", bundle), bundle, audio)
    got, got_text = stream_through(make_backend("torch", bundle, BackendConfig(int8=True)),
                                   bundle, audio)
    diffs = np.concatenate([np.abs(_probs(bundle, a) - _probs(bundle, b)).ravel() for a, b in
                            zip(ref, got, strict=True)])
    assert 0 < diffs.max() < 0.3 and diffs.mean() < 0.003, (diffs.max(), diffs.mean())
    assert error_rates([ref_text], [got_text]).cer <= 0.1, (ref_text, got_text)
    assert error_rates([TEXT], [got_text]).wer <= error_rates([TEXT], [ref_text]).wer + 0.15


@torch.no_grad()
def _probs(bundle, out: np.ndarray) -> np.ndarray:
    """A step's outputs (T', V) or (T', J) -> token probabilities (T', V)."""
    if bundle.model.output_kind == "log_probs":
        return np.exp(out)
    head = bundle.model.head  # RNN-T: the joiner on each frame and the start predictor output
    blank = torch.full((1,), bundle.tokenizer.blank_id, dtype=torch.long)
    pred, _ = head.predict(blank, head.init_pred_state(1))  # (1, J)
    return head.join(torch.from_numpy(out), pred).exp().numpy()


def test_int8_refuses_other_backends_devices_and_models() -> None:
    from server.app import ServerConfig, backend_config

    bundle = load(None)
    for name, device in (("onnxruntime", "cpu"), ("tensorrt", "cpu"), ("torch", "cuda")):
        with pytest.raises(ValueError, match="int8 needs backend torch on device cpu"):
            make_backend(name, bundle, BackendConfig(device=device, int8=True))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="int8 needs backend 'torch' and device 'cpu'"):
        backend_config(ServerConfig(backend="onnxruntime", int8=True))
    assert backend_config(ServerConfig(int8=True)).int8
    with pytest.raises(ValueError, match="no GRU, LSTM or Linear layer"):
        quantize_int8(nn.Sequential(nn.Conv1d(2, 2, 3)))
