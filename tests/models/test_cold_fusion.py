"""Cold fusion in the transducer (models/nn/cold_fusion.py): the frozen character LM's state
rides in the predictor state, so a token-by-token predictor equals the whole-sequence one,
chunked decoding equals whole, ONNX equals torch, and the LM never changes in training."""

from __future__ import annotations

import itertools
from dataclasses import asdict

import pytest
import torch

from models.decoding import RnntBeamDecoder, RnntGreedyDecoder
from models.lm.neural import BOS, EOS, UNK, NeuralLm, NeuralLmConfig, NeuralLmError
from models.nn.cold_fusion import ColdFusionConfig, token_map
from models.nn.transducer import TransducerConfig, TransducerHead
from models.tokenizer import DEFAULT_SYMBOLS, CharTokenizer
from tests.models.test_rnnt_decoding import assert_onnx_transducer_equals_torch

TOK = CharTokenizer()
CHARS = [UNK, BOS, EOS, *DEFAULT_SYMBOLS[1:]]


def char_lm(seed: int = 0, hidden: int = 12) -> NeuralLm:
    torch.manual_seed(seed)
    # dropout > 0: a frozen LM that ran in training mode would give different outputs
    return NeuralLm(NeuralLmConfig(type="lstm", units="char", vocab=CHARS, embed=8,
                                   hidden=hidden, dropout=0.5))


def fused_cfg(predictor: str = "lstm", lm: NeuralLm | None = None) -> TransducerConfig:
    lm = lm or char_lm()
    cf = ColdFusionConfig(lm=asdict(lm.cfg), token_map=token_map(TOK.symbols, lm), dim=10)
    return TransducerConfig(predictor, 24, 16, cold_fusion=cf)  # type: ignore[arg-type]


def fused_head(predictor: str = "lstm", seed: int = 0) -> TransducerHead:
    lm = char_lm(seed + 100)
    torch.manual_seed(seed)
    h = TransducerHead(32, TOK.vocab_size, fused_cfg(predictor, lm))
    assert h.fusion is not None
    h.fusion.load_lm(lm)
    with torch.no_grad():
        h.out.bias[0] += 1.0
    return h.eval()


@pytest.mark.parametrize("predictor", ["lstm", "stateless"])
@torch.no_grad()
def test_token_by_token_prediction_equals_the_whole_sequence(predictor: str) -> None:
    """predict() one token at a time, the LM's state carried in the predictor state, gives the
    same (B, U+1, J) as predict_sequence over the whole targets (training's path)."""
    h = fused_head(predictor, seed=1)
    targets = torch.randint(1, TOK.vocab_size, (3, 9), generator=torch.Generator().manual_seed(2))
    whole = h.predict_sequence(targets)  # (B, U+1, J)
    state = h.init_pred_state(3)
    tokens = torch.zeros(3, dtype=torch.long)  # blank = start
    for u in range(targets.shape[1] + 1):
        pred, state = h.predict(tokens, state)
        torch.testing.assert_close(pred, whole[:, u], atol=1e-5, rtol=1e-5)
        if u < targets.shape[1]:
            tokens = targets[:, u]
    assert set(state) >= {"lm_h", "lm_c"}


@torch.no_grad()
def test_the_lm_state_in_the_predictor_is_the_lms_own() -> None:
    """After a sequence of tokens the predictor state's lm_h / lm_c equal the frozen LM's
    (h, c) after reading <s> and the same characters: the LM is read, not re-learned."""
    h = fused_head(seed=4)
    assert h.fusion is not None
    text = "set an alarm"
    ids = TOK.encode(text)
    state = h.init_pred_state(1)
    for t in [0, *ids]:
        _, state = h.predict(torch.tensor([t]), state)
    lm_inputs = torch.tensor([[h.fusion.lm.index[BOS], *(h.fusion.lm.index[c] for c in text)]])
    _, (lm_h, lm_c) = h.fusion.lm(lm_inputs, None)
    torch.testing.assert_close(state["lm_h"], lm_h)
    torch.testing.assert_close(state["lm_c"], lm_c)


@pytest.mark.parametrize("predictor", ["lstm", "stateless"])
def test_chunked_decoding_equals_whole(predictor: str) -> None:
    h = fused_head(predictor, seed=3)
    enc = 2.0 * torch.randn(30, 16, generator=torch.Generator().manual_seed(5))
    for make in (lambda: RnntGreedyDecoder(h, TOK, frame_seconds=0.04),
                 lambda: RnntBeamDecoder(h, TOK, frame_seconds=0.04, beam_size=3)):
        for cuts in ([3, 17], [1, 2, 29], [15]):
            whole, parts = make(), make()
            whole.update(enc)
            for a, b in itertools.pairwise([0, *cuts, 30]):
                parts.update(enc[a:b])
                parts.result()
            assert parts.finalize() == whole.finalize()
            if isinstance(whole, RnntGreedyDecoder):
                assert whole.finalize().text  # not vacuous
            else:  # the whole n-best, texts and scores, and it holds words
                assert parts.nbest() == whole.nbest() and any(t for t, _ in whole.nbest())


@torch.no_grad()
def test_onnx_predictor_with_the_lm_state_equals_torch(tmp_path) -> None:
    from models.acoustic import AcousticModel, ModelConfig
    from models.bundle import DecodingDefaults, load, save
    from models.features import FbankConfig
    from models.nn.encoder import EncoderConfig

    torch.manual_seed(0)
    cfg = ModelConfig(EncoderConfig(d_model=32, num_layers=1, conv_channels=4), TOK.vocab_size,
                      head="rnnt", transducer=fused_cfg())
    model = AcousticModel(cfg)
    save(tmp_path / "b", model, features=FbankConfig(), tokenizer=TOK,
         decoding=DecodingDefaults(chunk_frames=16))
    bundle = load(tmp_path / "b")  # the config (LM included) and weights round-trip
    assert bundle.model.cfg == cfg
    torch.testing.assert_close(bundle.model.head.fusion.lm.out.weight,
                               model.head.fusion.lm.out.weight)
    names = assert_onnx_transducer_equals_torch(bundle, steps=4)
    assert "state_lm_h" in names and "state_lm_c" in names


def test_training_updates_the_gate_and_never_the_lm() -> None:
    """One optimiser step on the transducer loss: the gate and LM projection move, the LM's
    weights do not, and module.train() leaves the LM in eval mode (no dropout)."""
    from training.losses.rnnt import rnnt_loss

    h = fused_head(seed=6).train()
    assert h.fusion is not None and not h.fusion.lm.training
    lm_before = {k: v.clone() for k, v in h.fusion.lm.state_dict().items()}
    gate_before = h.fusion.gate.weight.detach().clone()
    opt = torch.optim.AdamW(h.parameters(), lr=1e-2, weight_decay=0.1)
    targets = torch.randint(1, TOK.vocab_size, (2, 5), generator=torch.Generator().manual_seed(0))
    enc = h(torch.randn(2, 12, 32))
    logp = h.join(enc.unsqueeze(2), h.predict_sequence(targets).unsqueeze(1))
    loss = rnnt_loss(logp, targets, torch.tensor([12, 12]), torch.tensor([5, 5]), blank=0)
    loss.mean().backward()
    opt.step()
    assert all(p.grad is None for p in h.fusion.lm.parameters())
    for k, v in h.fusion.lm.state_dict().items():
        torch.testing.assert_close(v, lm_before[k], rtol=0, atol=0)
    assert not torch.equal(h.fusion.gate.weight, gate_before)


def test_word_lms_subword_tokens_and_other_shapes_are_refused() -> None:
    word = NeuralLm(NeuralLmConfig(type="lstm", vocab=[UNK, BOS, EOS, "set", "alarm"],
                                   embed=4, hidden=4))
    with pytest.raises(NeuralLmError, match="character LM"):
        token_map(TOK.symbols, word)
    with pytest.raises(NeuralLmError, match="not in the LM's character vocabulary"):
        token_map(("<blk>", "<unk>", "\u2581the"), char_lm())
    h = fused_head()
    assert h.fusion is not None
    with pytest.raises(NeuralLmError, match="configuration differs"):
        h.fusion.load_lm(char_lm(hidden=16))
