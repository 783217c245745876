"""Waveform and feature augmentation for training (all in numpy / torch, no torchaudio).

Speed perturbation (resampling, changes tempo and pitch), additive noise at a random SNR
(white, pink or brown), telephone channel (300-3400 Hz band-limit, 8 kHz, mu-law round trip),
synthetic room reverberation (exponentially decaying noise impulse response), SpecAugment.
"""

from __future__ import annotations

import numpy as np
import torch

from models.audio import resample
from training.config import AugmentConfig

RATE = 16_000


def speed(x: np.ndarray, factor: float) -> np.ndarray:
    if factor == 1.0:
        return x
    return resample(x, round(RATE * factor), RATE) if RATE * factor >= 8000 else x


NOISE_COLOURS = ("white", "pink", "brown")


def shape_noise(white: np.ndarray, colour: str) -> np.ndarray:
    """White noise -> white, pink (1/f power) or brown (1/f^2 power) noise."""
    if colour == "white":
        return white
    spec = np.fft.rfft(white)
    f = np.arange(spec.size) + 1.0
    spec /= np.sqrt(f) if colour == "pink" else f
    return np.fft.irfft(spec, white.size)


def colored_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Noise of a colour drawn at random."""
    white = rng.standard_normal(n)
    return shape_noise(white, NOISE_COLOURS[int(rng.integers(3))])


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    noise = colored_noise(x.size, rng)
    p_sig = float(np.mean(x**2)) + 1e-12
    p_noise = float(np.mean(noise**2)) + 1e-12
    return (x + noise * np.sqrt(p_sig / (p_noise * 10 ** (snr_db / 10)))).astype(np.float32)


def telephone(x: np.ndarray) -> np.ndarray:
    y = resample(x, RATE, 8000)
    spec = np.fft.rfft(y)
    freqs = np.fft.rfftfreq(y.size, 1 / 8000)
    spec[(freqs < 300) | (freqs > 3400)] = 0
    y = np.clip(np.fft.irfft(spec, y.size), -1, 1)
    mu = 255.0
    coded = np.round((np.sign(y) * np.log1p(mu * np.abs(y)) / np.log1p(mu) + 1) / 2 * mu)
    z = coded / mu * 2 - 1
    y = np.sign(z) * ((1 + mu) ** np.abs(z) - 1) / mu
    return resample(y.astype(np.float32), 8000, RATE)[: x.size]


def reverb(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rt60 = rng.uniform(0.15, 0.6)
    n = int(rt60 * RATE)
    t = np.arange(n) / RATE
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    ir[0] = 1.0 / rng.uniform(0.3, 1.0)  # direct path
    size = 1 << int(x.size + n - 1).bit_length()  # FFT convolution: np.convolve is 20x slower
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(ir, size), size)[: x.size]
    return (y / (np.max(np.abs(y)) + 1e-9) * np.max(np.abs(x))).astype(np.float32)


def augment_waveform(x: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    x = speed(x, float(rng.choice(cfg.speed)))
    if rng.random() < cfg.reverb_prob:
        x = reverb(x, rng)
    if rng.random() < cfg.noise_prob:
        x = add_noise(x, rng.uniform(*cfg.snr_db), rng)
    if rng.random() < cfg.telephone_prob:
        x = telephone(x)
    return x.astype(np.float32)


def spec_augment(feats: torch.Tensor, cfg: AugmentConfig, rng: np.random.Generator,
                 fill: torch.Tensor) -> torch.Tensor:
    """feats (T, F); masked regions take `fill` (the normaliser mean: normalised zero)."""
    x = feats.clone()
    t, f = x.shape
    for _ in range(cfg.spec_freq_masks):
        w = int(rng.integers(0, cfg.spec_freq_width + 1))
        s = int(rng.integers(0, max(1, f - w)))
        x[:, s : s + w] = fill[s : s + w]
    for _ in range(cfg.spec_time_masks):
        w = int(rng.integers(0, min(cfg.spec_time_width, max(1, t // 5)) + 1))
        s = int(rng.integers(0, max(1, t - w)))
        x[s : s + w] = fill
    return x
