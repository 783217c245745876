"""The causal Conformer body: step == forward for any chunking (also past the cached left
context), no frame sees its future, batch rows independent, ONNX export equals torch."""

from __future__ import annotations

import pytest
import torch

from models.acoustic import AcousticModel, ModelConfig
from models.nn.encoder import EncoderConfig
from tests.models.test_encoder import TOL, assert_batch_rows_independent, stream


def make_model(subsampling: int = 4, lookahead: int = 2, left: int = 5, seed: int = 0,
               vocab: int = 29) -> AcousticModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(EncoderConfig(num_mel_bins=80, conv_channels=8, d_model=32, num_layers=2,
                                    lookahead=lookahead, subsampling=subsampling,
                                    arch="conformer", heads=4, ff_mult=2, conv_kernel=5,
                                    left_context=left), vocab_size=vocab)
    model = AcousticModel(cfg).eval()
    with torch.no_grad():  # non-trivial normaliser, row convolution and position biases
        model.encoder.set_normalizer(torch.randn(80), torch.rand(80) + 0.5)
        model.encoder.rowconv.conv.weight.normal_()
        for layer in model.encoder.conformer.layers:
            layer.attn.rel_bias.normal_()
    return model


@pytest.mark.parametrize("lookahead", [0, 2])
@pytest.mark.parametrize("chunk", [8, 16, 40])
@pytest.mark.parametrize("subsampling", [4, 8])
def test_step_equals_forward(lookahead: int, chunk: int, subsampling: int) -> None:
    """123 frames = 31 output frames at x4: well past the 5-frame left context."""
    model = make_model(subsampling, lookahead)
    feats = torch.randn(1, 123, 80) * 3 + 5
    with torch.no_grad():
        offline, _ = model(feats)
        streamed = stream(model, feats, chunk)
    assert streamed.shape == offline.shape
    assert (streamed - offline).abs().max().item() <= TOL


def test_no_frame_sees_its_future_beyond_the_lookahead() -> None:
    model = make_model(lookahead=0)
    feats = torch.randn(1, 80, 80)
    changed = feats.clone()
    changed[:, 60:] += 5.0  # output frames >= 15 change
    with torch.no_grad():
        a, _ = model(feats)
        b, _ = model(changed)
    assert torch.allclose(a[:, :15], b[:, :15], atol=TOL)
    assert not torch.allclose(a[:, 15], b[:, 15], atol=1e-4)


def test_left_context_is_bounded() -> None:
    """With 2 layers of 5 frames of left context (plus the convolutions' 4), a change more
    than 2 * (5 + 4) output frames back no longer reaches the output."""
    model = make_model(lookahead=0)
    feats = torch.randn(1, 160, 80)
    changed = feats.clone()
    changed[:, :8] += 5.0  # output frames 0-1 (and frame 2 through the subsampling's cache)
    with torch.no_grad():
        a, _ = model(feats)
        b, _ = model(changed)
    assert not torch.allclose(a[:, 3], b[:, 3], atol=1e-4)
    assert torch.allclose(a[:, 2 + 2 * 9 + 1:], b[:, 2 + 2 * 9 + 1:], atol=TOL)


def test_batch_rows_are_independent_and_state_is_batched() -> None:
    model = make_model()
    assert_batch_rows_independent(model)
    state = model.init_state(3)
    assert set(state) == {"conv1", "conv2", "att_k", "att_v", "att_valid", "conv"}
    assert all(v.shape[0] == 3 for v in state.values())


def test_bad_config_is_specific() -> None:
    with pytest.raises(ValueError, match="multiple of attention heads 5"):
        AcousticModel(ModelConfig(EncoderConfig(d_model=32, arch="conformer", heads=5), 29))
    with pytest.raises(ValueError, match="arch must be one of"):
        AcousticModel(ModelConfig(EncoderConfig(arch="lstm"), 29))  # type: ignore[arg-type]


def test_onnx_export_equals_torch_for_any_chunk(tmp_path) -> None:
    """The exported step (explicit attention/convolution caches) equals torch's step, chunk
    after chunk, at chunk sizes other than the exported one."""
    import numpy as np

    from models.backends import make_backend
    from models.bundle import load, save
    from models.features import FbankConfig
    from models.tokenizer import CharTokenizer

    save(tmp_path / "b", make_model(), features=FbankConfig(), tokenizer=CharTokenizer())
    bundle = load(tmp_path / "b")
    ort_be, torch_be = make_backend("onnxruntime", bundle), make_backend("torch", bundle)
    rng = np.random.default_rng(0)
    la = bundle.model.lookahead_frames
    s_ort, s_t = ort_be.init_state(2), torch_be.init_state(2)
    for t in (8, 32, 4, 64, 16):  # 31 output frames in all: past the 5-frame left context
        x = rng.standard_normal((2, t + la, 80)).astype(np.float32) * 3
        got, ref = ort_be.step({**s_ort, "features": x}), torch_be.step({**s_t, "features": x})
        assert np.abs(got["outputs"] - ref["outputs"]).max() < 1e-4
        s_ort = {k.removeprefix("new_"): v for k, v in got.items() if k != "outputs"}
        s_t = {k.removeprefix("new_"): v for k, v in ref.items() if k != "outputs"}
