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
    assert r_fused.finalize() == r_plain.finalize()
    assert r_fused.nbest() == r_plain.nbest() and any(t for t, _ in r_plain.nbest())


def _tiny_lm(kind: str, seed: int = 0) -> NeuralLm:
    torch.manual_seed(seed)
    extra = {"topics": 3, "factor": 4, "bow_vocab": VOCAB[3:]} if kind == "tcnlm" else {}
    return NeuralLm(NeuralLmConfig(type=kind, vocab=VOCAB, embed=8, hidden=8, **extra)).eval()


class _Counted(NeuralLm):
    """Not a stand-in: the same LM, counting its forward calls and their batch sizes."""

    calls: list[int]

    def forward(self, inputs, t, state=None):  # type: ignore[override]
        self.calls.append(int(inputs.shape[0]))
        return super().forward(inputs, t, state)


def _counted(model: NeuralLm) -> _Counted:
    model.__class__ = _Counted
    model.calls = []
    return model  # type: ignore[return-value]


@pytest.mark.parametrize("kind", ["lstm", "tcnlm"])
def test_prefetch_runs_one_batched_step_and_scores_as_each_context_alone(kind) -> None:
    """Four contexts one word past a cached one go through the LM in one (B=4) step; a context
    with no cached parent is computed alone; every next-word log prob then equals what the
    context gives computed by itself (a fresh LM, no batching)."""
    model = _counted(_tiny_lm(kind))
    lm = NeuralWordLM(model)
    lm.logprob(("<s>", "set"), "an")  # caches ("<s>", "set")
    base = ("<s>", "set")
    contexts = [(*base, w) for w in ("an", "alarm", "music", "zebra")] + [("<s>", "play", "x")]
    model.calls.clear()
    lm.prefetch(contexts)
    assert sorted(model.calls) == [1, 4], model.calls  # the orphan alone, then one batch of 4
    model.calls.clear()
    alone = NeuralWordLM(_tiny_lm(kind))
    for ctx in contexts:
        for w in VOCAB[3:] + ["</s>"]:
            assert lm.logprob(ctx, w) == pytest.approx(alone.logprob(ctx, w), abs=1e-5)
    assert model.calls == []  # every score was a lookup


def test_ctc_beams_advanced_together_equal_each_stream_alone_with_fewer_lm_calls() -> None:
    """Three streams of different lengths, chunk by chunk through `advance_beams` with one
    shared neural LM: each stream's n-best (texts and scores) equals its own beam decoded alone
    with an LM of the same weights, and the shared LM ran fewer, batched steps."""
    from models.decoding import CtcPrefixBeamDecoder
    from models.decoding.ctc_beam import advance_beams
    from tests.models.test_ctc_decoding import random_log_probs

    tok = CharTokenizer()
    cfg = LmConfig(weight=0.8, word_bonus=0.5, oov_penalty=2.0)
    space = tok.encode(" ")[0]
    lps = []
    for i, n in enumerate((60, 45, 70)):  # words of 2-4 letters: spaces come often
        lp = random_log_probs(n, tok.vocab_size, 10 + i, sharp=2.0)
        lp[3 + i :: 4, space] += 3.0
        lps.append(torch.log_softmax(lp, dim=-1))
    shared = _counted(_tiny_lm("lstm"))
    fusion = LmFusion(NeuralWordLM(shared), cfg)
    together = [CtcPrefixBeamDecoder(tok, frame_seconds=0.04, lm=fusion) for _ in lps]
    for start in range(0, 70, 8):
        advance_beams(together, [lp[start : start + 8] for lp in lps])
    apart_calls = 0
    for dec, lp in zip(together, lps, strict=True):
        own = _counted(_tiny_lm("lstm"))
        alone = CtcPrefixBeamDecoder(tok, frame_seconds=0.04,
                                     lm=LmFusion(NeuralWordLM(own), cfg))
        alone.lm.lm.batched = False  # the one-by-one path: no prefetch at all
        for start in range(0, 70, 8):
            alone.update(lp[start : start + 8])
        apart_calls += len(own.calls)
        got, want = dec.nbest(), alone.nbest()
        assert [t for t, _ in got] == [t for t, _ in want] and any(" " in t for t, _ in want)
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-4)
    assert max(shared.calls) > 1 and len(shared.calls) < apart_calls, (shared.calls, apart_calls)


def test_rnnt_beam_with_batched_lm_steps_equals_the_one_by_one_lm() -> None:
    """The RNN-T beam with a neural LM whose word endings are prefetched per frame (batched
    across the beam) gives the same result and n-best scores as with no prefetch."""
    from models.decoding import RnntBeamDecoder
    from tests.models.test_rnnt_decoding import frames, head

    tok = CharTokenizer()
    cfg = LmConfig(weight=0.8, word_bonus=0.5, oov_penalty=2.0)
    h, enc = head("lstm", seed=3), frames(40, 7)
    out = []
    for batched in (True, False):
        model = _counted(_tiny_lm("lstm"))
        lm = NeuralWordLM(model)
        lm.batched = batched
        dec = RnntBeamDecoder(h, tok, frame_seconds=0.04, beam_size=4, lm=LmFusion(lm, cfg))
        for start in range(0, 40, 6):
            dec.update(enc[start : start + 6])
        out.append((dec.nbest(), model.calls))
    (got, calls_b), (want, calls_1) = out
    assert [t for t, _ in got] == [t for t, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-4)
    assert max(calls_1) == 1 and (max(calls_b) > 1 or not any(" " in t for t, _ in want))


def test_prefetch_survives_the_cache_filling_up_while_it_works() -> None:
    """A cache of 3 entries: computing the contexts with no cached parent clears it, evicting
    the parent of the batched ones; prefetch still computes every context, and each scores as
    it does computed alone."""
    lm = NeuralWordLM(_tiny_lm("lstm"), cache_size=3)
    lm.logprob(("<s>", "set"), "an")  # caches ("<s>", "set")
    contexts = [("<s>", "set", "an"), ("<s>", "set", "alarm"), ("<s>", "play", "x"),
                ("<s>", "zebra", "y"), ("<s>", "music", "z")]
    lm.prefetch(contexts)
    alone = NeuralWordLM(_tiny_lm("lstm"))
    for ctx in contexts:
        assert lm.logprob(ctx, "for") == pytest.approx(alone.logprob(ctx, "for"), abs=1e-5)


def test_a_mixture_with_a_neural_component_batches_it_and_scores_the_same(tmp_path) -> None:
    """ARPA unigram + LSTM mixed: the mixture batches (its neural part's steps run in one call
    for a beam's new words) and every score equals the one-by-one mixture's."""
    from models.lm.arpa import ArpaLM
    from models.lm.mixture import MixtureLM

    words = VOCAB[1:]
    arpa = tmp_path / "u.arpa"
    arpa.write_text(f"\\data\\\nngram 1={len(words)}\n\n\\1-grams:\n"
                    + "".join(f"-1.0\t{w}\n" for w in words) + "\n\\end\\\n")
    model = _counted(_tiny_lm("lstm"))
    mixed = MixtureLM([ArpaLM.load(arpa), NeuralWordLM(model)], [0.5, 0.5])
    assert mixed.batched
    base = ("<s>", "set")
    mixed.logprob(base, "an")
    contexts = [(*base, w) for w in ("an", "alarm", "music")]
    model.calls.clear()
    mixed.prefetch(contexts)
    assert model.calls == [3]
    alone = MixtureLM([ArpaLM.load(arpa), NeuralWordLM(_tiny_lm("lstm"))], [0.5, 0.5])
    for ctx in contexts:
        assert mixed.logprob(ctx, "for") == pytest.approx(alone.logprob(ctx, "for"), abs=1e-5)
    assert model.calls == [3]
    mixed.clear_cache()
    mixed.logprob(contexts[0], "for")
    assert len(model.calls) > 1  # the neural part's cache was emptied too


@pytest.mark.parametrize("with_lm", [False, True])
def test_rnnt_beams_advanced_together_equal_each_stream_alone(with_lm: bool) -> None:
    """Three RNN-T streams of different lengths chunk by chunk through `beam_batch` (one
    joiner and one predictor call per frame for all; with a shared neural LM, one LM call for
    their word endings): each stream's n-best equals its own beam decoded alone."""
    from models.decoding import RnntBeamDecoder
    from models.decoding.rnnt import beam_batch
    from tests.models.test_rnnt_decoding import frames, head

    tok = CharTokenizer()
    cfg = LmConfig(weight=0.8, word_bonus=0.5, oov_penalty=2.0)
    h = head("lstm", seed=3)
    with torch.no_grad():
        h.out.bias[tok.encode(" ")[0]] += 0.6  # random joiner: words end now and then
    encs = [frames(n, 20 + i) for i, n in enumerate((30, 22, 36))]
    shared_model = _counted(_tiny_lm("lstm"))
    shared = LmFusion(NeuralWordLM(shared_model), cfg) if with_lm else None
    together = [RnntBeamDecoder(h, tok, frame_seconds=0.04, beam_size=4, lm=shared)
                for _ in encs]
    for start in range(0, 36, 5):
        beam_batch(together, [e[start : start + 5] for e in encs])
    for dec, enc in zip(together, encs, strict=True):
        own = LmFusion(NeuralWordLM(_tiny_lm("lstm")), cfg) if with_lm else None
        alone = RnntBeamDecoder(h, tok, frame_seconds=0.04, beam_size=4, lm=own)
        for start in range(0, 36, 5):
            alone.update(enc[start : start + 5])
        got, want = dec.nbest(), alone.nbest()
        assert [t for t, _ in got] == [t for t, _ in want] and any(t for t, _ in want)
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-4)
        assert dec.frames == alone.frames == enc.shape[0]
    if with_lm:  # words ended, and the streams' LM steps went in batches
        assert max(shared_model.calls) > 1, shared_model.calls
