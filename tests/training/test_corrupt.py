"""Corruptions: exact SNR, determinism by seed, real room acoustics (direct-path delay, energy
decay), telephone band limits, babble from other voices, and `chorus data corrupt` writing a
test set that evaluation reads; plus the training augmentations' shapes and determinism."""

from __future__ import annotations

import numpy as np
import pytest

from training.config import AugmentConfig
from training.data.augment import augment_waveform, spec_augment
from training.data.corrupt import (
    KINDS,
    RATE,
    SPEED_OF_SOUND,
    RoomConfig,
    babble,
    corrupt,
    mix_at_snr,
    room_impulse_response,
    utterance_rng,
)


def speechlike(seed: int, seconds: float = 1.5) -> np.ndarray:
    """A voiced, amplitude-modulated signal (harmonics of 120-180 Hz, syllable-rate bursts)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = rng.uniform(120, 180)
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 12))
    return (0.05 * x * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2)).astype(np.float32)


def snr(clean: np.ndarray, noisy: np.ndarray) -> float:
    n = noisy.astype(np.float64) - clean
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(n**2))


@pytest.mark.parametrize("kind", ["white", "pink", "brown", "noise", "babble"])
@pytest.mark.parametrize("target", [20.0, 10.0, 5.0, 0.0])
def test_noise_reaches_the_snr_asked(kind: str, target: float) -> None:
    x = speechlike(1)
    others = [speechlike(s, 2.0) for s in (2, 3, 4, 5)]
    y, info = corrupt(x, kind, utterance_rng(0, "u1"), snr_db=target, sources=others)
    assert y.shape == x.shape and y.dtype == np.float32 and info["snr_db"] == target
    assert abs(snr(x, y) - target) <= 0.5


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_audio(kind: str) -> None:
    x, others = speechlike(1), [speechlike(s) for s in (2, 3)]
    small = RoomConfig(size_max=(5.0, 4.0, 3.0), rt60_s=(0.2, 0.3), distance_m=(0.5, 1.5))
    a, _ = corrupt(x, kind, utterance_rng(3, "u1"), sources=others, room=small)
    b, _ = corrupt(x, kind, utterance_rng(3, "u1"), sources=others, room=small)
    assert np.array_equal(a, b)
    if kind != "telephone":  # the channel itself draws nothing
        c, _ = corrupt(x, kind, utterance_rng(4, "u1"), sources=others, room=small)
        assert not np.array_equal(a, c)


def test_room_response_has_a_direct_path_and_decays() -> None:
    ir, info = room_impulse_response(np.random.default_rng(0),
                                     RoomConfig(rt60_s=(0.5, 0.5), distance_m=(3.0, 3.0)))
    peak = int(np.argmax(np.abs(ir)))
    # the direct path arrives after distance / c (pyroomacoustics delays by its filter length)
    onset = int(np.argmax(np.abs(ir) > 0.05 * np.abs(ir).max()))
    assert info["distance_m"] == 3.0 and onset <= peak
    # Schroeder's energy decay curve falls monotonically, and by >= 20 dB within the RT60
    edc = np.cumsum((ir[peak:] ** 2)[::-1])[::-1]
    edc_db = 10 * np.log10(edc / edc[0] + 1e-300)
    assert np.all(np.diff(edc_db) <= 1e-9)
    assert edc_db[int(0.5 * RATE)] <= -20.0
    # a farther source arrives later: the delay grows by about d / c
    near, _ = room_impulse_response(np.random.default_rng(0),
                                    RoomConfig(rt60_s=(0.5, 0.5), distance_m=(0.5, 0.5)))
    lag = int(np.argmax(np.abs(ir))) - int(np.argmax(np.abs(near)))
    assert abs(lag - 2.5 / SPEED_OF_SOUND * RATE) <= 0.002 * RATE


def test_farfield_keeps_words_in_place_and_adds_a_tail() -> None:
    x = np.zeros(RATE, np.float32)
    x[4000:4400] = speechlike(1, 0.025)
    y, info = corrupt(x, "farfield", utterance_rng(0, "u"), snr_db=40.0,
                      room=RoomConfig(rt60_s=(0.6, 0.6)))
    assert y.shape == x.shape and {"rt60_s", "distance_m", "room_m"} <= set(info)
    env = np.abs(y)
    assert env[:3900].max() < 0.05 * env.max()  # nothing before the burst (direct path aligned)
    assert env[6000:9000].max() > 0.01 * env.max()  # reverberation after it


def test_telephone_is_band_limited() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(RATE).astype(np.float32) * 0.1
    y, _ = corrupt(x, "telephone", rng)
    spec = np.abs(np.fft.rfft(y)) ** 2
    freqs = np.fft.rfftfreq(y.size, 1 / RATE)
    assert y.shape == x.shape
    assert spec[freqs > 4000].sum() < 0.01 * spec.sum()
    assert spec[freqs < 200].sum() < 0.01 * spec.sum()


def test_babble_mixes_several_other_talkers() -> None:
    sources = [speechlike(s) for s in range(6)]
    b = babble(RATE, sources, np.random.default_rng(0), talkers=4)
    assert b.shape == (RATE,)
    with pytest.raises(ValueError, match="other utterances"):
        babble(RATE, [], np.random.default_rng(0))
    with pytest.raises(ValueError, match="power > 0"):
        mix_at_snr(np.zeros(10, np.float32), np.ones(10), 10.0)


def test_training_augmentation_shapes_and_determinism() -> None:
    import torch

    cfg = AugmentConfig(noise_prob=1.0, reverb_prob=1.0, telephone_prob=1.0, speed=(0.9,))
    x = speechlike(1)
    a = augment_waveform(x, cfg, np.random.default_rng(5))
    b = augment_waveform(x, cfg, np.random.default_rng(5))
    assert np.array_equal(a, b) and a.dtype == np.float32
    assert abs(a.size - x.size / 0.9) <= 2  # speed 0.9: longer by 1 / 0.9
    f = torch.randn(200, 80)
    fill = torch.zeros(80)
    m = spec_augment(f, cfg, np.random.default_rng(1), fill)
    assert m.shape == f.shape and torch.equal(m, spec_augment(f, cfg, np.random.default_rng(1), fill))
    assert int((m == 0).all(dim=1).sum()) > 0 or int((m == 0).all(dim=0).sum()) > 0


def test_corrupt_command_writes_a_test_set(tmp_path) -> None:
    from clients.cli import main
    from training.data.synth.corpus import SynthConfig, synthesize_corpus
    from training.eval.run import load_manifest

    corpus = tmp_path / "c"
    synthesize_corpus(SynthConfig(out=corpus, hours=0.005, seed=5, jobs=1, engines=("flite",),
                                  split_weights={"train": 0.0, "dev": 0.0, "test": 1.0}),
                      progress=False)
    src = corpus / "cuts_test.jsonl.gz"
    for kind, extra in (("babble", ["--snr", "5"]), ("telephone", [])):
        assert main(["data", "corrupt", "--manifest", str(src), "--kind", kind, *extra,
                     "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    clean = {u.id: u for u in load_manifest(src)}
    noisy = load_manifest(tmp_path / "o" / "cuts_test-babble5.jsonl.gz")
    phone = load_manifest(tmp_path / "o" / "cuts_test-telephone.jsonl.gz")
    assert len(noisy) == len(phone) == len(clean)
    from pathlib import Path  # absolute audio paths: the set reads from any working directory

    assert all(Path(u.cut.recording.sources[0].source).is_absolute() for u in noisy)
    for u in noisy:
        c = clean[u.id.removesuffix("-test-babble5")]
        assert (u.ref, u.engine, u.domain, u.voice) == (c.ref, c.engine, c.domain, c.voice)
        assert u.cut.supervisions[0].custom["corruption"]["kind"] == "babble"
        assert abs(snr(c.audio(), u.audio()) - 5.0) <= 0.6  # 16-bit WAV rounding included
