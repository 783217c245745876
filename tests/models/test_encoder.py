import pytest
import torch

from models.acoustic import AcousticModel, ModelConfig
from models.nn.encoder import EncoderConfig

TOL = 1e-5


def make_model(rnn: str = "gru", lookahead: int = 2, seed: int = 0, subsampling: int = 4,
               cmn: str = "global") -> AcousticModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(EncoderConfig(num_mel_bins=80, conv_channels=8, d_model=32, num_layers=2,
                                    rnn=rnn, lookahead=lookahead,  # type: ignore[arg-type]
                                    subsampling=subsampling, cmn=cmn,  # type: ignore[arg-type]
                                    cmn_prior_frames=20), vocab_size=29)
    model = AcousticModel(cfg).eval()
    with torch.no_grad():  # a non-trivial normaliser and row convolution
        model.encoder.set_normalizer(torch.randn(80), torch.rand(80) + 0.5)
        model.encoder.rowconv.conv.weight.normal_()
    return model


def stream(model: AcousticModel, feats: torch.Tensor, chunk: int) -> torch.Tensor:
    """Chunked decode of one utterance (1, T, F) the way a session does it."""
    la = model.lookahead_frames
    t = feats.shape[1]
    s = model.subsampling
    t_pad = -(-t // s) * s
    pad = model.encoder.pad_frame.expand(1, t_pad - t + la, -1)
    x = torch.cat([feats, pad], dim=1)
    state = model.init_state(1)
    outs = []
    for start in range(0, t_pad, chunk):
        end = min(start + chunk, t_pad)
        out, state = model.step(x[:, start : end + la], state)
        outs.append(out)
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
@pytest.mark.parametrize("lookahead", [0, 1, 3])
@pytest.mark.parametrize("chunk", [4, 16, 32])
@pytest.mark.parametrize("subsampling", [4, 2, 8])
@pytest.mark.parametrize("cmn", ["global", "online"])
def test_step_equals_forward(rnn: str, lookahead: int, chunk: int, subsampling: int,
                             cmn: str) -> None:
    model = make_model(rnn, lookahead, subsampling=subsampling, cmn=cmn)
    feats = torch.randn(1, 123, 80) * 3 + 5
    if chunk % subsampling:  # a chunk must hold whole output frames
        with pytest.raises(ValueError, match=f"positive multiple of {subsampling}"):
            stream(model, feats, chunk)
        return
    with torch.no_grad():
        offline, lengths = model(feats)
        streamed = stream(model, feats, chunk)
    t_out = -(-123 // subsampling)
    assert lengths.tolist() == [t_out] and offline.shape == (1, t_out, 29)
    assert streamed.shape == offline.shape
    assert (streamed - offline).abs().max().item() <= TOL


@pytest.mark.parametrize("cmn", ["global", "online"])
def test_batched_forward_equals_single(cmn: str) -> None:
    assert_batch_rows_independent(make_model(cmn=cmn))


@torch.no_grad()
def test_online_cmn_removes_a_constant_offset_as_the_prior_fades() -> None:
    """Adding a constant spectral offset c to every frame of an utterance moves normalised frame
    t by exactly c * prior / (prior + t + 1) / std: the running mean absorbs it, and a stream
    centred on itself forgets a channel's colouring (global CMVN keeps all of it)."""
    model = make_model(cmn="online")
    enc = model.encoder
    x = torch.randn(1, 200, 80) * 3 + 5
    c = torch.randn(80) * 4
    a, _ = enc.normalize(x)
    b, _ = enc.normalize(x + c)
    t = torch.arange(200, dtype=torch.float32)[:, None]
    want = c / enc.feat_std * 20 / (20 + t + 1)  # (T, F), prior 20 frames
    torch.testing.assert_close(b[0] - a[0], want, atol=1e-4, rtol=1e-4)
    glob = make_model(cmn="global").encoder
    g, _ = glob.normalize(x + c)
    g0, _ = glob.normalize(x)
    torch.testing.assert_close(g[0] - g0[0], (c / glob.feat_std).expand(200, -1))


def assert_batch_rows_independent(model: AcousticModel) -> None:
    """A padded row of a batch gives what the utterance alone gives."""
    a, b = torch.randn(1, 90, 80), torch.randn(1, 57, 80)
    batch = torch.zeros(2, 90, 80)
    batch[0], batch[1, :57] = a[0], b[0]
    with torch.no_grad():
        out, lengths = model(batch, torch.tensor([90, 57]))
        out_b, _ = model(b)
    assert lengths.tolist() == [23, 15]
    assert (out[1, :15] - out_b[0]).abs().max().item() <= TOL


def test_states_are_batched_on_dim0() -> None:
    model = make_model("lstm")
    state = model.init_state(3)
    assert set(state) == {"conv1", "conv2", "rnn_h", "rnn_c"}
    assert all(v.shape[0] == 3 for v in state.values())
    online = make_model("gru", cmn="online").init_state(3)
    assert set(online) == {"conv1", "conv2", "rnn_h", "cmn_sum", "cmn_count"}
    assert all(v.shape[0] == 3 for v in online.values())


def test_step_rejects_bad_chunk() -> None:
    model = make_model()
    with pytest.raises(ValueError, match="multiple of 4"):
        model.step(torch.zeros(1, 6 + model.lookahead_frames, 80), model.init_state(1))


def test_lookahead_is_used() -> None:
    model = make_model(lookahead=2)
    feats = torch.randn(1, 40, 80)
    changed = feats.clone()
    changed[:, 36:] += 5.0  # only the last 4 frames (one output frame) change
    with torch.no_grad():
        a, _ = model(feats)
        b, _ = model(changed)
    # outputs 7 and 8 see frame 9's input through the row convolution; earlier ones don't
    assert torch.allclose(a[:, :7], b[:, :7], atol=TOL)
    assert not torch.allclose(a[:, 7], b[:, 7], atol=1e-4)
