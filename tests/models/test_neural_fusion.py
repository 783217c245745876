"""Shallow fusion of a neural LM (models.lm.neural.NeuralWordLM) through the decoders' LmFusion."""

import math

import pytest
import torch

from models.decoding import LmConfig, LmFusion, make_decoder
from models.lm.neural import NeuralLm, NeuralLmConfig, NeuralWordLM, load
from models.tokenizer import CharTokenizer
from training.lm.neural import NeuralTrainConfig, train

VOCAB = ["<unk>", "<s>", "</s>", "set", "an", "alarm", "for", "seven", "play", "music"]


@pytest.mark.parametrize("kind", ["lstm", "tcnlm"])
def test_word_lm_view_scores_sentences_as_the_model_does(kind) -> None:
    """Word by word through the cached states == the whole sentence at once; a window shorter
    than the sentence (order 3) still gives finite, different scores."""
    torch.manual_seed(0)
    extra = {"topics": 3, "factor": 4, "bow_vocab": VOCAB[3:]} if kind == "tcnlm" else {}
    model = NeuralLm(NeuralLmConfig(type=kind, vocab=VOCAB, embed=8, hidden=8, **extra)).eval()
    words = ["set", "an", "alarm", "for", "zebra", "seven"]
    want = model.sentence_logprobs([words])[0]
    lm = NeuralWordLM(model)
    assert lm.sentence_logprob(words) == pytest.approx(want, abs=1e-4)
    assert lm.sentence_logprob(words) == pytest.approx(want, abs=1e-4)  # from the cache
    short = NeuralWordLM(model, order=3).sentence_logprob(words)
    assert math.isfinite(short) and short != pytest.approx(want, abs=1e-4)
    assert "alarm" in lm.vocab and "al" in lm.prefixes and lm.unk_logprob < 0


def test_fusion_with_a_trained_lstm_fixes_a_close_acoustic_call(tmp_path) -> None:
    """CTC frames spelling "set an alarn" with m nearly as likely as n: the beam alone keeps
    "alarn"; fused with an LSTM LM trained on "set an alarm ..." it writes "alarm"."""
    torch.manual_seed(0)
    text = [([], "set an alarm for seven".split()), ([], "play some music".split())] * 40
    train(NeuralTrainConfig(embed=16, hidden=16, max_steps=150, batch=16, min_count=1), text,
          None, tmp_path / "lm", progress=False)
    tok = CharTokenizer()
    frames = []
    for ch in "set an alar?":
        row = torch.full((tok.vocab_size,), -12.0)
        if ch == "?":
            row[tok.encode("n")[0]], row[tok.encode("m")[0]] = math.log(0.55), math.log(0.45)
        else:
            row[tok.encode(ch)[0]] = 0.0
        frames += [row, torch.full((tok.vocab_size,), -12.0).index_fill(0, torch.tensor([0]), 0.0)]
    log_probs = torch.log_softmax(torch.stack(frames), dim=-1)  # (T, V)

    def decode(lm):
        dec = make_decoder("beam", tok, frame_seconds=0.04, beam_size=8, lm=lm)
        dec.update(log_probs)
        return dec.finalize().text

    assert decode(None) == "set an alarn"
    fusion = LmFusion(NeuralWordLM(load(tmp_path / "lm")), LmConfig(1.0, 0.0, 0.0))
    assert decode(fusion) == "set an alarm"


def test_chorus_lm_attach_puts_a_neural_lm_in_a_bundle_for_fusion(tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    from models.bundle import load as load_bundle
    from tests.models.test_cli import tiny_bundle

    bundle = tiny_bundle(tmp_path / "b")
    NeuralLm(NeuralLmConfig(vocab=VOCAB, embed=8, hidden=8)).save(tmp_path / "nlm")
    subprocess.run([sys.executable, "-m", "clients.cli", "lm", "attach", "--bundle", str(bundle),
                    "--lm", str(tmp_path / "nlm"), "--weight", "0.4", "--bonus", "1",
                    "--decoder", "beam"], cwd=Path(__file__).parents[2], check=True,
                   capture_output=True, timeout=120)
    b = load_bundle(bundle)
    assert isinstance(b.lm.lm, NeuralWordLM) and b.lm.cfg.weight == 0.4
    assert (bundle / "lm/nlm/lm.safetensors").is_file()
    dec = make_decoder("beam", b.tokenizer, frame_seconds=0.04, beam_size=4, lm=b.lm)
    dec.update(torch.log_softmax(torch.randn(30, b.tokenizer.vocab_size), dim=-1))
    assert isinstance(dec.finalize().text, str)


@pytest.mark.parametrize("kind", ["lstm", "tcnlm"])
def test_neural_fusion_at_weight_zero_equals_the_beam_without_an_lm(kind) -> None:
    """Shallow fusion of a neural LM with weight, word bonus and OOV penalty 0: the CTC prefix
    beam's n-best and the RNN-T beam's result are exactly those of the same beam without an LM."""
    from models.decoding import CtcPrefixBeamDecoder, RnntBeamDecoder
    from tests.models.test_ctc_decoding import random_log_probs
    from tests.models.test_rnnt_decoding import frames, head

    torch.manual_seed(1)
    extra = {"topics": 3, "factor": 4, "bow_vocab": VOCAB[3:]} if kind == "tcnlm" else {}
    lm = NeuralWordLM(NeuralLm(NeuralLmConfig(type=kind, vocab=VOCAB, embed=8, hidden=8,
                                              **extra)))
    inert = LmFusion(lm, LmConfig(weight=0.0, word_bonus=0.0, oov_penalty=0.0))
    tok = CharTokenizer()
    lp = random_log_probs(30, tok.vocab_size, 5, sharp=3.0)
    plain, fused = (CtcPrefixBeamDecoder(tok, frame_seconds=0.04, lm=f) for f in (None, inert))
    plain.update(lp)
    fused.update(lp)
    assert fused.nbest() == plain.nbest() and plain.nbest()
    h, enc = head("lstm", seed=2), frames(25, 4)
    r_plain, r_fused = (RnntBeamDecoder(h, tok, frame_seconds=0.04, beam_size=4, lm=f)
                        for f in (None, inert))
    r_plain.update(enc)
    r_fused.update(enc)
    assert r_fused.finalize() == r_plain.finalize() and r_plain.finalize().text
