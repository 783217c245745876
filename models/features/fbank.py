"""Kaldi-compatible log-mel filterbank in pure PyTorch.

Hand-written because torchaudio's native libraries need the CUDA build of torch (unusable here)
and because the streaming extractor must share every step of the offline computation.
Per frame (snip_edges=True, as Kaldi): remove DC offset, pre-emphasis, window, zero-padded FFT,
power spectrum, triangular mel filters on Kaldi's mel scale (1127 ln(1 + f/700)), log with an
energy floor. Frames are independent of each other, so streaming equals offline exactly.
"""

from __future__ import annotations

import math

import torch

from models.features.config import FbankConfig
from models.features.pcen import Pcen, PcenState


def mel_scale(freq_hz: torch.Tensor | float) -> torch.Tensor:
    return 1127.0 * torch.log1p(torch.as_tensor(freq_hz, dtype=torch.float64) / 700.0)


def vtln_warp(freq_hz: torch.Tensor, alpha: float, low_hz: float, high_hz: float) -> torch.Tensor:
    """Piecewise-linear vocal-tract-length warp of frequencies (Kaldi's VTLN function).

    The middle band is scaled by 1 / alpha (alpha > 1 lowers every formant, as a longer vocal
    tract does); below the lower knee and above the upper knee two linear pieces keep low_hz
    and high_hz fixed, so the warped axis still spans the filterbank's band. The knees sit at
    100 Hz above low_hz and 500 Hz below high_hz, moved inward by alpha so the map stays
    monotonic. Frequencies outside [low_hz, high_hz] are unchanged.
    """
    if alpha == 1.0:
        return freq_hz
    lo_knee = (low_hz + 100.0) * max(1.0, alpha)
    hi_knee = (high_hz - 500.0) * min(1.0, alpha)
    scale = 1.0 / alpha
    lo_to = scale * lo_knee
    hi_to = scale * hi_knee
    f = freq_hz
    left = low_hz + (lo_to - low_hz) / (lo_knee - low_hz) * (f - low_hz)
    right = high_hz + (high_hz - hi_to) / (high_hz - hi_knee) * (f - high_hz)
    warped = torch.where(f < lo_knee, left, torch.where(f < hi_knee, scale * f, right))
    return torch.where((f < low_hz) | (f > high_hz), f, warped)


def mel_filterbank(cfg: FbankConfig, warp: float = 1.0) -> torch.Tensor:
    """Triangular filters, shape (fft_size // 2 + 1, num_mel_bins), float64.

    Kaldi defines filters on the fft_size // 2 bins below Nyquist; the Nyquist row is zero.
    `warp` != 1 evaluates the filters on VTLN-warped bin frequencies (`vtln_warp`): training's
    vocal-tract-length perturbation; serving always uses 1.
    """
    n_fft_bins = cfg.fft_size // 2
    bin_hz = cfg.sample_rate / cfg.fft_size
    mel_low = float(mel_scale(cfg.low_freq_hz))
    mel_high = float(mel_scale(cfg.upper_freq_hz))
    delta = (mel_high - mel_low) / (cfg.num_mel_bins + 1)
    b = torch.arange(cfg.num_mel_bins, dtype=torch.float64)
    left = (mel_low + b * delta)[None, :]  # (1, M)
    center = left + delta
    right = left + 2 * delta
    freqs = vtln_warp(torch.arange(n_fft_bins, dtype=torch.float64) * bin_hz, warp,
                      cfg.low_freq_hz, cfg.upper_freq_hz)
    mel = mel_scale(freqs)[:, None]  # (K, 1)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    weights = torch.where(mel <= center, up, down)
    weights = torch.where((mel > left) & (mel < right), weights, torch.zeros_like(weights))
    nyquist_row = torch.zeros(1, cfg.num_mel_bins, dtype=torch.float64)
    return torch.cat([weights, nyquist_row], dim=0)  # (K + 1, M)


def window_function(cfg: FbankConfig) -> torch.Tensor:
    n = cfg.window_samples
    i = torch.arange(n, dtype=torch.float64)
    a = 2 * math.pi / (n - 1)
    if cfg.window_type == "povey":
        return (0.5 - 0.5 * torch.cos(a * i)) ** 0.85
    if cfg.window_type == "hann":
        return 0.5 - 0.5 * torch.cos(a * i)
    if cfg.window_type == "hamming":
        return 0.54 - 0.46 * torch.cos(a * i)
    raise ValueError(f"FbankConfig.window_type must be povey|hann|hamming, got {cfg.window_type!r}")


class Fbank:
    """Offline extractor: `Fbank(cfg)(waveform (S,)) -> features (T, num_mel_bins)`.

    `waveform` is float in [-1, 1] at `cfg.sample_rate`.
    """

    def __init__(self, cfg: FbankConfig | None = None, *, dtype: torch.dtype = torch.float32,
                 warp: float = 1.0):
        self.cfg = cfg or FbankConfig()
        self.cfg.validate()
        self.dtype = dtype
        self.window = window_function(self.cfg).to(dtype)  # (W,)
        self.mel = mel_filterbank(self.cfg, warp).to(dtype)  # (K + 1, M)
        self.pcen = Pcen(self.cfg.pcen, hop_ms=self.cfg.hop_ms)

    @property
    def num_mel_bins(self) -> int:
        return self.cfg.num_mel_bins

    def frame(self, waveform: torch.Tensor) -> torch.Tensor:
        """(S,) -> (T, W) overlapping frames (snip_edges=True)."""
        cfg = self.cfg
        n = cfg.num_frames(waveform.shape[0])
        if n == 0:
            return waveform.new_zeros((0, cfg.window_samples))
        return waveform[: (n - 1) * cfg.hop_samples + cfg.window_samples].unfold(
            0, cfg.window_samples, cfg.hop_samples
        )

    def mel_energies(self, frames: torch.Tensor) -> torch.Tensor:
        """(T, W) frames at int16 scale -> (T, M) mel power energies."""
        cfg = self.cfg
        x = frames.to(self.dtype)
        if x.shape[0] == 0:
            return x.new_zeros((0, cfg.num_mel_bins))
        if cfg.remove_dc_offset:
            x = x - x.mean(dim=1, keepdim=True)
        if cfg.preemphasis != 0.0:
            prev = torch.cat([x[:, :1], x[:, :-1]], dim=1)  # Kaldi: x[0] -= c * x[0]
            x = x - cfg.preemphasis * prev
        x = x * self.window
        spec = torch.fft.rfft(x, n=cfg.fft_size, dim=1)  # (T, K + 1)
        power = spec.real.square() + spec.imag.square()
        return power @ self.mel  # (T, M)

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """(T, W) frames at int16 scale -> (T, M) log-mel features: row by row, so the frames
        of many streams may be stacked into one call (stateless: log compression only)."""
        if self.cfg.compression != "log":
            raise ValueError("Fbank.features is frame by frame: log compression only (PCEN "
                             "carries state across frames)")
        return self.log(self.mel_energies(frames))

    def log(self, energies: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.clamp(energies, min=self.cfg.energy_floor))

    def compress(
        self, energies: torch.Tensor, pcen_state: PcenState | None = None
    ) -> tuple[torch.Tensor, PcenState | None]:
        """Mel energies (T, M) -> features (T, M), threading the PCEN state when used."""
        if self.cfg.compression == "log":
            return self.log(energies), None
        return self.pcen(energies, pcen_state)

    def energies(self, waveform: torch.Tensor) -> torch.Tensor:
        """(S,) float waveform -> (T, M) mel power energies, before compression."""
        if waveform.dim() != 1:
            raise ValueError(f"Fbank expects a mono waveform of shape (S,), got {tuple(waveform.shape)}")
        return self.mel_energies(self.frame(waveform.to(self.dtype) * self.cfg.input_scale))

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        feats, _ = self.compress(self.energies(waveform))
        return feats
