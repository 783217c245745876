"""An independent float64 fbank reference, written from Kaldi's description, frame by frame.

Deliberately shares no code with models.features: plain numpy loops, its own window, FFT
power spectrum and mel filter construction.
"""

import math

import numpy as np


def kaldi_fbank_reference(
    wave_int16_scale: np.ndarray,
    *,
    sample_rate: int = 16000,
    frame_len: int = 400,
    frame_shift: int = 160,
    n_fft: int = 512,
    num_bins: int = 80,
    low_freq: float = 20.0,
    preemph: float = 0.97,
) -> np.ndarray:
    x = np.asarray(wave_int16_scale, dtype=np.float64)
    n_frames = 0 if len(x) < frame_len else 1 + (len(x) - frame_len) // frame_shift
    window = np.array(
        [(0.5 - 0.5 * math.cos(2 * math.pi * i / (frame_len - 1))) ** 0.85 for i in range(frame_len)]
    )

    def mel(f: float) -> float:
        return 1127.0 * math.log(1.0 + f / 700.0)

    high_freq = sample_rate / 2
    mlo, mhi = mel(low_freq), mel(high_freq)
    step = (mhi - mlo) / (num_bins + 1)
    banks = np.zeros((num_bins, n_fft // 2))
    for b in range(num_bins):
        left, center, right = mlo + b * step, mlo + (b + 1) * step, mlo + (b + 2) * step
        for k in range(n_fft // 2):
            m = mel(k * sample_rate / n_fft)
            if left < m < right:
                banks[b, k] = (m - left) / (center - left) if m <= center else (right - m) / (right - center)

    out = np.zeros((n_frames, num_bins))
    for t in range(n_frames):
        frame = x[t * frame_shift : t * frame_shift + frame_len].copy()
        frame -= frame.mean()
        for i in range(frame_len - 1, 0, -1):
            frame[i] -= preemph * frame[i - 1]
        frame[0] -= preemph * frame[0]
        frame *= window
        padded = np.zeros(n_fft)
        padded[:frame_len] = frame
        spectrum = np.fft.fft(padded)[: n_fft // 2]
        power = np.abs(spectrum) ** 2
        energies = banks @ power
        out[t] = np.log(np.maximum(energies, np.finfo(np.float32).eps))
    return out
