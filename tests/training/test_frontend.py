"""Trainable PCEN: at its initial values it is serving's PCEN; every per-channel parameter
receives gradient; the learned values exported as a feature config give serving the same
features; a tiny PCEN run yields a bundle with learned per-channel values that streams
exactly as it transcribes offline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.features import Fbank, FbankConfig, PcenConfig
from tests.training.test_corrupt import speechlike
from tests.training.test_train import tiny_corpus  # noqa: F401  (the fixture)
from training.frontend import TrainablePcen, serving_features


def energies(seed: int) -> torch.Tensor:
    x = torch.from_numpy(speechlike(seed) + 0.001 * np.random.default_rng(seed).standard_normal(
        24000).astype(np.float32))
    return Fbank(FbankConfig()).energies(x)  # (T, 80)


def test_initial_values_are_servings_pcen() -> None:
    e = energies(0)
    served = Fbank(FbankConfig(compression="pcen")).compress(e)[0]
    trained = TrainablePcen(80, PcenConfig(), hop_ms=10.0)(e[None])[0]
    assert torch.allclose(trained, served, rtol=1e-4, atol=1e-4)


def test_every_parameter_gets_gradient() -> None:
    pcen = TrainablePcen(80, PcenConfig(), hop_ms=10.0)
    out = pcen(torch.stack([energies(1)[:100], energies(2)[:100]]))  # (2, 100, 80)
    (out * torch.linspace(-1, 1, 80)).sum().backward()
    for name, p in pcen.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert (p.grad != 0).sum() >= 70, name  # per channel, not one shared value


def test_learned_values_export_to_the_same_serving_features() -> None:
    torch.manual_seed(0)
    pcen = TrainablePcen(80, PcenConfig(), hop_ms=10.0)
    with torch.no_grad():
        for p in pcen.parameters():
            p.add_(0.3 * torch.randn_like(p))
    e = energies(3)
    cfg = serving_features(FbankConfig(), pcen)
    assert cfg.compression == "pcen" and len(cfg.pcen.alpha) == 80
    cfg = FbankConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))  # as a bundle stores it
    served = Fbank(cfg).compress(e)[0]
    assert torch.allclose(pcen(e[None])[0].detach(), served, rtol=1e-3, atol=1e-3)
    assert not torch.allclose(served, Fbank(FbankConfig(compression="pcen")).compress(e)[0])


def test_per_channel_values_must_match_the_mel_bins() -> None:
    with pytest.raises(ValueError, match="per-channel"):
        FbankConfig(num_mel_bins=40, compression="pcen", pcen=PcenConfig(alpha=(0.9,) * 80)).validate()


def test_pcen_training_exports_learned_values_and_streams_exactly(tiny_corpus, tmp_path) -> None:  # noqa: F811
    from models.audio import load_audio
    from models.bundle import load
    from tests.training.test_train import overrides, stream_equals_offline
    from training.config import load_config
    from training.train import train

    out = tmp_path / "run"
    cfg = load_config(None, [*overrides(tiny_corpus, out, 10), "frontend=pcen",
                             "augment.spec_time_masks=1"])
    bundle = load(train(cfg, progress=False))
    pcen = bundle.features.pcen
    assert bundle.features.compression == "pcen" and len(pcen.alpha) == 80
    assert len(set(pcen.alpha)) > 1 and max(abs(a - 0.98) for a in pcen.alpha) > 1e-6  # learned
    from lhotse import CutSet

    cut = next(iter(CutSet.from_file(tiny_corpus / "cuts_dev.jsonl.gz")))
    stream_equals_offline(bundle, load_audio(cut.recording.sources[0].source))
