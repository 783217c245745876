"""RNN-T decoders over a random predictor/joiner: chunking never changes the result, beam 1 is
greedy with one symbol per frame, the beam's merged scores are real path probabilities (with
up to max_symbols tokens per frame, as greedy emits)."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.decoding import RnntBeamDecoder, RnntGreedyDecoder, make_decoder
from models.nn.transducer import TransducerConfig, TransducerHead
from models.tokenizer import CharTokenizer

TOK = CharTokenizer()


def head(predictor: str = "lstm", seed: int = 0) -> TransducerHead:
    torch.manual_seed(seed)
    h = TransducerHead(32, TOK.vocab_size, TransducerConfig(predictor, 24, 16)).eval()
    with torch.no_grad():
        h.out.bias[0] += 1.0  # blank a little more likely: words with gaps, as in real models
    return h


def frames(T: int, seed: int) -> torch.Tensor:
    return 2.0 * torch.randn(T, 16, generator=torch.Generator().manual_seed(seed))


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(0, 30), max_size=4), seed=st.integers(0, 50),
       predictor=st.sampled_from(["lstm", "stateless"]))
def test_chunked_equals_whole(cuts: list[int], seed: int, predictor: str) -> None:
    h, enc = head(predictor), frames(30, seed)
    for make in (lambda: RnntGreedyDecoder(h, TOK, frame_seconds=0.04),
                 lambda: RnntBeamDecoder(h, TOK, frame_seconds=0.04, beam_size=3, max_symbols=1),
                 lambda: RnntBeamDecoder(h, TOK, frame_seconds=0.04, beam_size=3)):
        whole, parts = make(), make()
        whole.update(enc)
        for a, b in itertools.pairwise([0, *sorted(cuts), 30]):
            parts.update(enc[a:b])
            parts.result()
        assert parts.finalize() == whole.finalize()
        if isinstance(whole, RnntGreedyDecoder):
            assert whole.finalize().text  # a random joiner emits: the check is not vacuous
        else:  # the whole n-best, texts and scores, and it holds words
            assert parts.nbest() == whole.nbest() and any(t for t, _ in whole.nbest())


@pytest.mark.parametrize("predictor", ["lstm", "stateless"])
def test_beam_of_one_is_greedy_with_one_symbol_per_frame(predictor: str) -> None:
    h = head(predictor, seed=3)
    for seed in range(5):
        enc = frames(25, seed)
        g = RnntGreedyDecoder(h, TOK, frame_seconds=0.04, max_symbols=1)
        b = RnntBeamDecoder(h, TOK, frame_seconds=0.04, beam_size=1, max_symbols=1)
        g.update(enc)
        b.update(enc)
        assert b.finalize() == g.finalize()


def pred_after(h: TransducerHead, prefix: tuple[int, ...]) -> torch.Tensor:
    """The predictor's output after the start symbol and `prefix`, teacher-forced."""
    state = h.init_pred_state(1)
    out, state = h.predict(torch.tensor([0]), state)
    for k in prefix:
        out, state = h.predict(torch.tensor([k]), state)
    return out


def path_sum(h: TransducerHead, enc: torch.Tensor, ids: tuple[int, ...], max_symbols: int
             ) -> float:
    """log-sum over the alignments of `ids` to the frames `enc` in which each frame emits
    j <= max_symbols tokens and then a blank, except after its max_symbols-th token."""
    total = []
    for split in itertools.product(range(max_symbols + 1), repeat=enc.shape[0]):
        if sum(split) != len(ids):
            continue
        lp, u = 0.0, 0
        for t, j in enumerate(split):
            for _ in range(j):
                lp += float(h.join(enc[t : t + 1], pred_after(h, ids[:u]))[0, ids[u]])
                u += 1
            if j < max_symbols:
                lp += float(h.join(enc[t : t + 1], pred_after(h, ids[:u]))[0, 0])
        total.append(lp)
    return float(torch.logsumexp(torch.tensor(total), 0))


@pytest.mark.parametrize("max_symbols", [1, 2, 3])
def test_beam_scores_are_path_log_probs(max_symbols: int) -> None:
    """With nothing pruned, every hypothesis's score = the log-sum over its alignments in
    which each frame emits j <= max_symbols tokens and then a blank, except that a frame's
    last allowed token (j = max_symbols) leaves it without one: greedy's rule, and with
    max_symbols=1 the modified beam search's (a token or a blank per frame)."""
    h = head(seed=5)
    enc = frames(3, 1)
    b = RnntBeamDecoder(h, TOK, frame_seconds=0.04, beam_size=5000, max_symbols=max_symbols)
    b.update(enc)

    nbest = b.nbest()
    # the best hypotheses of 0, 1 and 2 letters (letters only: a text is its tokens)
    picks = [next(x for x in nbest if len(x[0]) == n and x[0].isalpha() or not n and not x[0])
             for n in (0, 1, 2)]
    for text, score in picks:
        ids = tuple(TOK.encode(text)) if text else ()
        assert score == pytest.approx(path_sum(h, enc, ids, max_symbols), abs=1e-4), text


@torch.no_grad()
def test_ilm_subtraction_scores_each_hypothesis_less_its_internal_lm() -> None:
    """With an LM's ilm_weight w (and the LM itself at zero weight), every hypothesis scores
    its path log-sum minus w x the internal LM's log probability of its tokens: for each token,
    the joiner on a zero encoder output (enc_proj's bias) after the tokens before it,
    renormalised over the non-blank tokens; at w = 0 the scores are the plain ones."""
    from models.decoding import LmConfig, LmFusion
    from models.lm.arpa import ArpaLM
    from training.lm.ngram import estimate

    h, enc = head(seed=5), frames(2, 1)  # <= 2 tokens: all 813 sequences fit the beam
    lm = ArpaLM(estimate([["ab"]] * 3, 2))

    def internal(ids: tuple[int, ...]) -> float:
        total = 0.0
        for u, k in enumerate(ids):
            logits = h.out(torch.tanh(h.enc_proj.bias + pred_after(h, ids[:u])))[0]
            total += float(torch.log_softmax(logits[1:], -1)[k - 1])  # blank is id 0
        return total

    def nbest(w: float) -> list[tuple[str, float]]:
        b = RnntBeamDecoder(h, TOK, frame_seconds=0.04, beam_size=5000, max_symbols=1,
                            lm=LmFusion(lm, LmConfig(0.0, 0.0, 0.0, ilm_weight=w)))
        b.update(enc)
        return b.nbest()

    scored = dict(nbest(0.7))
    for text, score in nbest(0.0)[:6]:
        ids = tuple(TOK.encode(text))
        assert score == pytest.approx(path_sum(h, enc, ids, 1), abs=1e-4), text
        assert scored[text] == pytest.approx(score - 0.7 * internal(ids), abs=1e-4), text
    assert internal(tuple(TOK.encode("ab"))) < 0


def test_make_decoder_for_rnnt() -> None:
    h = head()
    assert isinstance(make_decoder("greedy", TOK, frame_seconds=0.04, transducer=h),
                      RnntGreedyDecoder)
    biased = make_decoder("greedy", TOK, frame_seconds=0.04, transducer=h, hotwords=[("x", 1.0)])
    assert isinstance(biased, RnntBeamDecoder) and biased.hotwords is not None


def test_hotwords_and_lm_steer_the_rnnt_beam() -> None:
    """Random acoustics: a strong hotword or an LM that knows only one word wins the beam;
    at zero weight neither changes anything."""
    from models.decoding import Hotwords, LmConfig, LmFusion
    from models.lm.arpa import ArpaLM
    from training.lm.ngram import estimate

    h, enc = head(seed=2), frames(20, 4)
    plain = RnntBeamDecoder(h, TOK, frame_seconds=0.04, beam_size=8)
    plain.update(enc)
    base = plain.finalize().text
    lm = ArpaLM(estimate([["zebra"]] * 5, 2))
    inert = RnntBeamDecoder(h, TOK, frame_seconds=0.04, beam_size=8,
                            lm=LmFusion(lm, LmConfig(0.0, 0.0, 0.0)))
    inert.update(enc)
    assert inert.finalize().text == base and inert.nbest() == plain.nbest()
    only = RnntBeamDecoder(h, TOK, frame_seconds=0.04, beam_size=8,
                           lm=LmFusion(lm, LmConfig(0.1, 0.0, 0.0, lexicon=True)))
    only.update(enc)
    assert set(only.finalize().text.split()) <= {"zebra"}  # the lexicon: one word
    runner_up = plain.nbest()[1][0]  # what the acoustics rank second
    boosted = RnntBeamDecoder(h, TOK, frame_seconds=0.04, beam_size=8,
                              hotwords=Hotwords([(runner_up, 5.0)]))
    boosted.update(enc)
    assert base != runner_up and boosted.finalize().text == runner_up


@pytest.mark.parametrize("predictor", ["lstm", "stateless"])
@torch.no_grad()
def test_onnx_predictor_and_joiner_equal_torch(tmp_path, predictor: str) -> None:
    from models.acoustic import AcousticModel, ModelConfig
    from models.bundle import DecodingDefaults, load, save
    from models.features import FbankConfig
    from models.nn.encoder import EncoderConfig

    torch.manual_seed(0)
    cfg = ModelConfig(EncoderConfig(d_model=32, num_layers=1, conv_channels=4), TOK.vocab_size,
                      head="rnnt", transducer=TransducerConfig(predictor, 24, 16))
    save(tmp_path / "b", AcousticModel(cfg), features=FbankConfig(), tokenizer=TOK,
         decoding=DecodingDefaults(chunk_frames=16))
    assert_onnx_transducer_equals_torch(load(tmp_path / "b"), steps=3)


@torch.no_grad()
def assert_onnx_transducer_equals_torch(bundle, steps: int) -> list[str]:
    """Export the bundle's predictor and joiner; over `steps` predictor steps (the state carried
    through ONNX and torch alike) and one joiner call, onnxruntime equals torch. Returns the
    predictor's ONNX input names."""
    import numpy as np
    import onnxruntime as ort

    from models.export.transducer_onnx import export_transducer

    h = bundle.model.head
    pred_path, join_path = export_transducer(bundle)
    pred_sess = ort.InferenceSession(str(pred_path), providers=["CPUExecutionProvider"])
    join_sess = ort.InferenceSession(str(join_path), providers=["CPUExecutionProvider"])
    state = h.init_pred_state(3)
    tokens = torch.tensor([0, 5, 9])
    for _ in range(steps):
        ref, ref_state = h.predict(tokens, state)
        got = pred_sess.run(None, {"tokens": tokens.numpy(),
                                   **{f"state_{k}": v.numpy() for k, v in state.items()}})
        np.testing.assert_allclose(got[0], ref.numpy(), atol=1e-5)
        for v, g in zip(ref_state.values(), got[1:], strict=True):
            np.testing.assert_allclose(g, v.numpy(), atol=1e-5)
        state, tokens = ref_state, (tokens + 3) % TOK.vocab_size
    j = h.cfg.joiner_dim
    enc, pred = torch.randn(5, j), torch.randn(5, j)
    np.testing.assert_allclose(join_sess.run(None, {"enc": enc.numpy(), "pred": pred.numpy()})[0],
                               h.join(enc, pred).numpy(), atol=1e-5)
    return [i.name for i in pred_sess.get_inputs()]


def test_batched_greedy_equals_each_stream_alone() -> None:
    from models.decoding.rnnt import greedy_batch

    h = head("lstm", seed=11)
    encs = [frames(n, seed) for seed, n in enumerate([7, 30, 1, 18])]
    alone = [RnntGreedyDecoder(h, TOK, frame_seconds=0.04) for _ in encs]
    batched = [RnntGreedyDecoder(h, TOK, frame_seconds=0.04) for _ in encs]
    for d, e in zip(alone, encs, strict=True):
        d.update(e[:5])
        d.update(e[5:])
    greedy_batch(batched, [e[:5] for e in encs])  # two chunks, different lengths per stream
    greedy_batch(batched, [e[5:] for e in encs])
    for a, b in zip(alone, batched, strict=True):
        assert a.finalize().text == b.finalize().text and a.frames == b.frames
        assert [(k, f) for k, f, _ in a.emissions] == [(k, f) for k, f, _ in b.emissions]
        assert [p for _, _, p in a.emissions] == pytest.approx([p for _, _, p in b.emissions],
                                                               abs=1e-5)


def test_decoding_predictor_step_equals_the_lstm_and_follows_weight_updates() -> None:
    """Under no_grad the LSTM predictor takes a table-driven step (models.nn.transducer
    `_lstm_step`): it must give torch.nn.LSTM's outputs and states, and after an in-place
    weight update (an optimizer step between validations) use the new weights, not a stale
    table."""
    h = head("lstm", seed=5)
    tokens = torch.tensor([0, 3, 7, 28])
    state = {"h": torch.randn(1, 4, 24), "c": torch.randn(1, 4, 24)}

    def reference() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.enable_grad():  # grad on: predict takes the torch.nn.LSTM path
            pred, new = h.predict(tokens, state)
        return pred.detach(), {k: v.detach() for k, v in new.items()}

    for _ in range(2):
        with torch.no_grad():
            pred, new = h.predict(tokens, state)
        ref_pred, ref_new = reference()
        torch.testing.assert_close(pred, ref_pred, rtol=1e-5, atol=1e-6)
        for k in ("h", "c"):
            assert new[k].shape == ref_new[k].shape == (1, 4, 24)
            torch.testing.assert_close(new[k], ref_new[k], rtol=1e-5, atol=1e-6)
        with torch.no_grad():  # an optimizer step: every input-side weight moves in place
            for p in (h.embed.weight, h.rnn.weight_ih_l0, h.rnn.bias_ih_l0, h.rnn.bias_hh_l0):
                p.add_(0.5)
    assert not torch.allclose(pred, h.pred_proj(h.rnn(h.embed(tokens).unsqueeze(1),
                                                      (state["h"], state["c"]))[0][:, 0]))


def test_merged_hypotheses_keep_the_more_probable_paths_word_times() -> None:
    """Two alignments of one token sequence merge (log-add); the word times (emissions) are the
    more probable alignment's, whichever came first: a beam keeps unlikely paths that emitted a
    letter early, in silence, and their times must not reach the result."""
    from models.decoding.rnnt import _Hyp, _merge

    h = head("lstm", seed=2)
    dec = RnntBeamDecoder(h, TOK, frame_seconds=0.04, beam_size=4)
    start = dec.hyps[0]
    s = TOK.encode("s")[0]

    def hyp(logp: float, frame: int) -> _Hyp:
        return _Hyp((s,), logp, [(s, frame, 0.5)], start.pred, start.state, start.ctx,
                    start.lm, 0.0, 0.0)

    for first, second in ((hyp(-9.0, 0), hyp(-1.0, 40)), (hyp(-1.0, 40), hyp(-9.0, 0))):
        into: dict = {}
        _merge(into, first)
        _merge(into, second)
        (m,) = into.values()
        assert m.emissions == [(s, 40, 0.5)]
        assert m.logp == pytest.approx(float(torch.logaddexp(torch.tensor(-9.0),
                                                             torch.tensor(-1.0))))
    # the same inside a round: a hypothesis leaving the frame by its blank merges into one
    # already past it
    stay = {(s,): hyp(-9.0, 0)}
    lp = torch.full((1, TOK.vocab_size), -50.0)
    lp[0, TOK.blank_id] = 0.0
    dec._round([hyp(-1.0, 40)], lp, stay, last=True)
    assert stay[(s,)].emissions == [(s, 40, 0.5)]
