"""Vocal-tract-length perturbation in the training dataset (augment.vtlp)."""

import numpy as np
import pytest
import torch

from models.features import Fbank, FbankConfig
from models.tokenizer import CharTokenizer
from training.config import AugmentConfig
from training.data.dataset import AsrDataset


class Cut:
    def __init__(self, i: int):
        rng = np.random.default_rng(i)
        self.id, self.audio = f"u{i}", (0.1 * rng.standard_normal(8000)).astype(np.float32)
        self.supervisions = [type("S", (), {"text": "a b"})()]

    def load_audio(self) -> np.ndarray:
        return self.audio[None]


def dataset(vtlp: tuple[float, float], seed: int = 0) -> AsrDataset:
    aug = AugmentConfig(speed=(1.0,), noise_prob=0.0, reverb_prob=0.0, telephone_prob=0.0,
                        spec_time_masks=0, spec_freq_masks=0, vtlp=vtlp)
    return AsrDataset(tokenizer=CharTokenizer(), features=FbankConfig(), augment=aug,
                      feat_mean=torch.zeros(80), seed=seed)


def test_warps_are_drawn_in_range_and_reproducible_by_seed() -> None:
    ds = dataset((0.9, 1.1), seed=3)
    seq = [ds.draw_warp() for _ in range(200)]
    assert min(seq) >= 90 and max(seq) <= 110 and len(set(seq)) > 10
    again = dataset((0.9, 1.1), seed=3)
    assert [again.draw_warp() for _ in range(200)] == seq
    assert {dataset((1.0, 1.0)).draw_warp() for _ in range(5)} == {100}


def test_off_by_default_gives_the_serving_features_and_on_changes_them() -> None:
    """vtlp (1, 1) (the default) computes exactly the serving fbank; a range away from 1 gives
    features of a warped filterbank (same frame count, different values)."""
    cut = Cut(0)
    serving = Fbank(FbankConfig())(torch.from_numpy(cut.audio))
    plain = dataset((1.0, 1.0))[[cut]]["features"][0]
    assert torch.equal(plain, serving)
    warped = dataset((1.15, 1.2))[[cut]]["features"][0]
    assert warped.shape == serving.shape and not torch.allclose(warped, serving)


def test_out_of_range_warps_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="augment.vtlp"):
        AugmentConfig(vtlp=(1.1, 0.9)).validate()
    with pytest.raises(ValueError, match="augment.vtlp"):
        AugmentConfig(vtlp=(0.5, 1.0)).validate()
    AugmentConfig(vtlp=(0.9, 1.1)).validate()
