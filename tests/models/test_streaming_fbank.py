import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.features import Fbank, FbankConfig, StreamingFbank
from tests.models.test_fbank import speech_like

WAVE = speech_like(seconds=0.8, seed=7)
TOL = 1e-5


def stream(cfg: FbankConfig, wave: np.ndarray, sizes: list[int]) -> torch.Tensor:
    ex = StreamingFbank(cfg)
    out, pos, i = [], 0, 0
    while pos < wave.size:
        n = sizes[i % len(sizes)]
        out.append(ex.accept(wave[pos : pos + n]))
        pos, i = pos + n, i + 1
    return torch.cat(out) if out else torch.zeros(0, cfg.num_mel_bins)


@pytest.mark.parametrize("compression", ["log", "pcen"])
@pytest.mark.parametrize("chunk", [1, 160, 1000, 400, 7919])
def test_fixed_chunkings_equal_offline(compression: str, chunk: int) -> None:
    cfg = FbankConfig(compression=compression)  # type: ignore[arg-type]
    wave = WAVE if chunk != 1 else WAVE[:6000]  # 1-sample feeding is slow in Python
    offline = Fbank(cfg)(torch.from_numpy(wave))
    streamed = stream(cfg, wave, [chunk])
    assert streamed.shape == offline.shape
    assert torch.max(torch.abs(streamed - offline)).item() <= TOL


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=30),
    compression=st.sampled_from(["log", "pcen"]),
)
def test_random_chunkings_equal_offline(sizes: list[int], compression: str) -> None:
    cfg = FbankConfig(compression=compression)  # type: ignore[arg-type]
    offline = Fbank(cfg)(torch.from_numpy(WAVE))
    streamed = stream(cfg, WAVE, sizes)
    assert streamed.shape == offline.shape
    assert torch.max(torch.abs(streamed - offline)).item() <= TOL


def test_counts_and_reset() -> None:
    ex = StreamingFbank()
    assert ex.accept(np.zeros(399, np.float32)).shape == (0, 80)
    assert ex.pending_samples == 399
    assert ex.accept(np.zeros(1, np.float32)).shape == (1, 80)
    assert ex.pending_samples == 400 - 160
    assert ex.frames_emitted == 1 and ex.samples_accepted == 400
    ex.reset()
    assert ex.pending_samples == 0 and ex.frames_emitted == 0


def test_pcen_differs_from_log_and_is_finite() -> None:
    log = Fbank(FbankConfig())(torch.from_numpy(WAVE))
    pcen = Fbank(FbankConfig(compression="pcen"))(torch.from_numpy(WAVE))
    assert torch.isfinite(pcen).all()
    assert not torch.allclose(log, pcen)
    assert pcen.min() >= 0  # (x + delta)^r - delta^r with x >= 0


def test_rejects_2d_samples() -> None:
    with pytest.raises(ValueError, match=r"expects \(S,\) samples"):
        StreamingFbank().accept(np.zeros((10, 2), np.float32))
