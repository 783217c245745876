"""N-best rescoring of finals with a neural LM (models/decoding/rescore.py)."""

import torch

from models.decoding.rescore import Rescorer
from training.lm.neural import NeuralTrainConfig, train


def test_the_lm_overturns_a_close_acoustic_call_but_not_a_clear_one(tmp_path) -> None:
    """An LSTM LM trained on "set an alarm for seven" lifts that sentence over a misspelt
    hypothesis the decoder scored slightly higher; weight 0 keeps the decoder's order; a
    decoder margin far larger than the LM's preference is kept."""
    torch.manual_seed(0)
    text = [([], "set an alarm for seven".split()), ([], "play some music".split())] * 40
    cfg = NeuralTrainConfig(embed=16, hidden=16, max_steps=150, minutes=5, batch=16, min_count=1)
    train(cfg, text, None, tmp_path / "lm", progress=False)
    from models.lm.neural import load

    lm = load(tmp_path / "lm")
    close = [("set an alarn for seven", -10.0), ("set an alarm for seven", -10.5)]
    assert Rescorer(lm, weight=1.0).best_index(close) == 1  # "set an alarm for seven"
    assert Rescorer(lm, weight=0.0).best_index(close) == 0  # "set an alarn for seven"
    clear = [("set an alarn for seven", -10.0), ("set an alarm for seven", -500.0)]
    assert Rescorer(lm, weight=1.0).best_index(clear) == 0
    assert Rescorer(lm, nbest=1).best_index(close) == 0  # only the top one
    assert Rescorer(lm).best_index([]) == -1
