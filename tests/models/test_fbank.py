import numpy as np
import pytest
import torch

from models.features import Fbank, FbankConfig
from tests.models.fbank_reference import kaldi_fbank_reference


def speech_like(seconds: float = 1.3, seed: int = 0, rate: int = 16000) -> np.ndarray:
    """Harmonic tones with an envelope plus a little noise: a real spectrum, not silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 30 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    x = x * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(t.size)
    return (0.3 * x / np.max(np.abs(x))).astype(np.float32)


def test_matches_independent_float64_reference() -> None:
    wave = speech_like()
    ours = Fbank(FbankConfig(), dtype=torch.float64)(torch.from_numpy(wave)).numpy()
    ref = kaldi_fbank_reference(wave.astype(np.float64) * 32768.0)
    assert ours.shape == ref.shape == (FbankConfig().num_frames(wave.size), 80)
    np.testing.assert_allclose(ours, ref, atol=1e-8, rtol=0)


def test_float32_close_to_reference() -> None:
    wave = speech_like(seed=3)
    ours = Fbank()(torch.from_numpy(wave)).numpy()
    ref = kaldi_fbank_reference(wave.astype(np.float64) * 32768.0)
    assert np.max(np.abs(ours - ref)) < 1e-3


def test_matches_kaldi_native_fbank() -> None:
    knf = pytest.importorskip("kaldi_native_fbank")
    wave = speech_like(seed=1)
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.mel_opts.num_bins = 80
    opts.mel_opts.norm = ""  # Kaldi's own (unnormalised, HTK-style) triangles
    opts.mel_opts.use_slaney_mel_scale = False
    online = knf.OnlineFbank(opts)
    online.accept_waveform(16000, (wave * 32768.0).tolist())
    online.input_finished()
    theirs = np.stack([online.get_frame(i) for i in range(online.num_frames_ready)])
    ours = Fbank()(torch.from_numpy(wave)).numpy()
    assert ours.shape == theirs.shape
    assert np.max(np.abs(ours - theirs)) < 2e-3


def test_short_input_yields_no_frames() -> None:
    feats = Fbank()(torch.zeros(399))
    assert feats.shape == (0, 80)


def test_rejects_multichannel() -> None:
    with pytest.raises(ValueError, match="mono waveform"):
        Fbank()(torch.zeros(2, 1000))


def test_invalid_config_is_specific() -> None:
    with pytest.raises(ValueError, match="low_freq_hz"):
        Fbank(FbankConfig(low_freq_hz=9000.0))


def test_config_round_trip() -> None:
    cfg = FbankConfig(num_mel_bins=64, compression="pcen")
    assert FbankConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown FbankConfig fields"):
        FbankConfig.from_dict({"bogus": 1})


def test_vtln_warp_scales_the_middle_band_and_keeps_the_band_edges() -> None:
    """vtln_warp: identity at 1; the band edges fixed; the middle band scaled by 1 / alpha;
    monotonic increasing over the band for the factors training draws."""
    from models.features.fbank import vtln_warp

    f = torch.linspace(0.0, 8000.0, 801, dtype=torch.float64)
    assert torch.equal(vtln_warp(f, 1.0, 20.0, 8000.0), f)
    for alpha in (0.85, 0.9, 1.1, 1.2):
        w = vtln_warp(f, alpha, 20.0, 8000.0)
        assert float(w[0]) == 0.0 and float(w[-1]) == pytest.approx(8000.0)
        assert bool(torch.all(w[1:] > w[:-1]))
        mid = (f > 500) & (f < 6000)
        np.testing.assert_allclose(w[mid].numpy(), (f[mid] / alpha).numpy(), rtol=1e-12)


def test_warped_filterbank_hears_a_tone_at_its_warped_frequency() -> None:
    """A 1 kHz tone through the filterbank warped by 1.1 peaks in the mel bin where the plain
    filterbank puts a 1000 / 1.1 Hz tone (a formant moved down, as VTLP intends), not 1 kHz."""
    t = np.arange(16000) / 16000

    def peak(freq: float, warp: float) -> int:
        wave = torch.from_numpy((0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32))
        return int(Fbank(FbankConfig(), warp=warp)(wave).mean(0).argmax())

    assert peak(1000.0, 1.1) == peak(1000.0 / 1.1, 1.0)
    assert peak(1000.0, 1.1) < peak(1000.0, 1.0)
