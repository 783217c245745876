"""Feature configuration shared by training, export and serving.

The defaults are Kaldi's `compute-fbank-feats` defaults except dither (0, so features are
deterministic and streaming equals offline exactly) and the input scale (waveforms are float in
[-1, 1]; Kaldi reads int16 sample values, so we multiply by 32768 to match it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

SAMPLE_RATE_HZ = 16_000
WINDOW_MS = 25.0
HOP_MS = 10.0
MEL_BINS = 80


@dataclass(frozen=True)
class PcenConfig:
    """Per-channel energy normalisation (Wang et al. 2017) over mel energies.

    `time_constant_s` sets the smoother: s = 1 - exp(-hop / time_constant). Each of
    time_constant_s, alpha, delta and r is one value for every channel or a tuple of one per
    mel channel (what trainable PCEN learns: training.frontend).
    """

    time_constant_s: float | tuple[float, ...] = 0.4
    alpha: float | tuple[float, ...] = 0.98  # gain-normalisation exponent
    delta: float | tuple[float, ...] = 2.0  # bias
    r: float | tuple[float, ...] = 0.5  # root compression
    eps: float = 1e-6

    PER_CHANNEL = ("time_constant_s", "alpha", "delta", "r")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PcenConfig:
        """JSON lists (per-channel values) back to tuples, so the config stays hashable."""
        kw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kw)

    def channels(self) -> int | None:
        """The number of channels the per-channel values give (None: all are scalars); they
        must agree."""
        sizes = {len(v) for k in self.PER_CHANNEL if isinstance(v := getattr(self, k), tuple)}
        if len(sizes) > 1:
            raise ValueError(f"PcenConfig: per-channel values of different lengths {sorted(sizes)}")
        return sizes.pop() if sizes else None


@dataclass(frozen=True)
class FbankConfig:
    sample_rate: int = SAMPLE_RATE_HZ
    window_ms: float = WINDOW_MS
    hop_ms: float = HOP_MS
    num_mel_bins: int = MEL_BINS
    low_freq_hz: float = 20.0
    high_freq_hz: float = 0.0  # <= 0: offset from Nyquist (Kaldi convention)
    preemphasis: float = 0.97
    remove_dc_offset: bool = True
    window_type: Literal["povey", "hann", "hamming"] = "povey"
    round_to_power_of_two: bool = True
    energy_floor: float = 1.1920928955078125e-07  # float32 epsilon, Kaldi's log floor
    input_scale: float = 32768.0  # float [-1, 1] -> int16 scale, as Kaldi reads WAV
    compression: Literal["log", "pcen"] = "log"
    pcen: PcenConfig = PcenConfig()

    # Derived values (computed, never retyped).
    @property
    def window_samples(self) -> int:
        return int(round(self.sample_rate * self.window_ms / 1000.0))

    @property
    def hop_samples(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000.0))

    @property
    def fft_size(self) -> int:
        n = self.window_samples
        if not self.round_to_power_of_two:
            return n
        return 1 << (n - 1).bit_length()

    @property
    def nyquist_hz(self) -> float:
        return self.sample_rate / 2.0

    @property
    def upper_freq_hz(self) -> float:
        return self.high_freq_hz if self.high_freq_hz > 0 else self.nyquist_hz + self.high_freq_hz

    def num_frames(self, num_samples: int) -> int:
        """Frames Kaldi emits for `num_samples` (snip_edges=True)."""
        if num_samples < self.window_samples:
            return 0
        return 1 + (num_samples - self.window_samples) // self.hop_samples

    def validate(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"FbankConfig.sample_rate must be positive, got {self.sample_rate}")
        if not 0 <= self.low_freq_hz < self.upper_freq_hz <= self.nyquist_hz:
            raise ValueError(
                "FbankConfig needs 0 <= low_freq_hz < high frequency <= Nyquist; got "
                f"low={self.low_freq_hz}, high={self.upper_freq_hz}, nyquist={self.nyquist_hz}"
            )
        n = self.pcen.channels()
        if n is not None and n != self.num_mel_bins:
            raise ValueError(f"FbankConfig.pcen has {n} per-channel values for "
                             f"{self.num_mel_bins} mel bins")
        if self.hop_samples <= 0 or self.window_samples < self.hop_samples:
            raise ValueError(
                f"FbankConfig needs 0 < hop ({self.hop_samples}) <= window ({self.window_samples})"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FbankConfig:
        d = dict(d)
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown FbankConfig fields: {sorted(unknown)}")
        if isinstance(d.get("pcen"), dict):
            d["pcen"] = PcenConfig.from_dict(d["pcen"])
        return cls(**d)
