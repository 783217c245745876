"""Word n-gram LM fused into the CTC prefix beam: it fixes spellings, is inert at zero weight,
streams like the whole utterance, and travels inside a bundle."""

from __future__ import annotations

import functools
import itertools
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.bundle import BundleError, DecodingDefaults, load, save
from models.decoding import CtcPrefixBeamDecoder, LmConfig, LmFusion, make_decoder
from models.features import FbankConfig
from models.lm.arpa import ArpaLM
from models.tokenizer import CharTokenizer
from tests.models.test_ctc_decoding import ambiguous, random_log_probs
from tests.models.test_encoder import make_model
from training.lm.ngram import estimate

TEXT = ["the cat sat on the mat", "a cat ran", "the dog sat", "my cat sat on my mat",
        "the mat is red"]


@pytest.fixture(scope="module")
def lm() -> ArpaLM:
    return ArpaLM(estimate([s.split() for s in TEXT], 3))


def beam(lp: torch.Tensor, fusion: LmFusion | None) -> CtcPrefixBeamDecoder:
    dec = CtcPrefixBeamDecoder(CharTokenizer(), frame_seconds=0.04, lm=fusion)
    dec.update(lp)
    return dec


def test_lm_picks_the_word_it_knows(lm: ArpaLM) -> None:
    tok = CharTokenizer()
    lp = ambiguous("the cat sat", {5: ("u", 0.6)}, tok)  # acoustics: "cut" 0.6, "cat" 0.4
    assert beam(lp, None).finalize().text == "the cut sat"
    assert beam(lp, LmFusion(lm, LmConfig(0.5, 1.0))).finalize().text == "the cat sat"


def test_word_order_matters_not_just_the_lexicon(lm: ArpaLM) -> None:
    tok = CharTokenizer()
    # "the mat" vs "the cat" differ in one letter; after "on the" the LM has seen only "mat"
    lp = ambiguous("the cat sat on the mat", {19: ("c", 0.6)}, tok)
    assert beam(lp, None).finalize().text == "the cat sat on the cat"
    assert beam(lp, LmFusion(lm, LmConfig(0.8, 1.0))).finalize().text == "the cat sat on the mat"


def test_lexicon_allows_only_vocabulary_words(lm: ArpaLM) -> None:
    """Acoustics say "cxt" (0.9): open vocabulary keeps it when OOV words cost nothing extra,
    the lexicon-constrained beam cannot spell it and finds "cat"."""
    tok = CharTokenizer()
    lp = ambiguous("the cat sat", {5: ("x", 0.9)}, tok)
    assert beam(lp, LmFusion(lm, LmConfig(0.1, 0.0, 0.0))).finalize().text == "the cxt sat"
    assert beam(lp, LmFusion(lm, LmConfig(0.1, 0.0, 0.0, lexicon=True))).finalize().text == "the cat sat"


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000))
def test_lexicon_beam_emits_vocabulary_words_only(lm: ArpaLM, seed: int) -> None:
    lp = random_log_probs(40, CharTokenizer().vocab_size, seed, sharp=2.0)
    dec = beam(lp, LmFusion(lm, LmConfig(0.5, 1.0, lexicon=True)))
    for text, score in dec.nbest():
        if score > float("-inf"):  # an unfinished last word can only be scored -inf
            assert set(text.split()) <= lm.vocab, text


def test_zero_weights_change_nothing(lm: ArpaLM) -> None:
    lp = random_log_probs(30, CharTokenizer().vocab_size, 5, sharp=3.0)
    plain = beam(lp, None)
    inert = beam(lp, LmFusion(lm, LmConfig(weight=0.0, word_bonus=0.0, oov_penalty=0.0)))
    assert inert.nbest() == plain.nbest()


@settings(max_examples=20, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=5), seed=st.integers(0, 99))
def test_streaming_with_lm_equals_whole_utterance(lm: ArpaLM, cuts: list[int], seed: int) -> None:
    fusion = LmFusion(lm, LmConfig(0.5, 1.0))
    lp = random_log_probs(40, CharTokenizer().vocab_size, seed, sharp=3.0)
    whole = beam(lp, fusion)
    parts = CtcPrefixBeamDecoder(CharTokenizer(), frame_seconds=0.04, lm=fusion)
    for a, b in itertools.pairwise([0, *sorted(cuts), 40]):
        parts.update(lp[a:b])
        parts.result()
    assert parts.finalize() == whole.finalize()


def test_bundle_carries_its_lm(tmp_path, lm: ArpaLM) -> None:
    root = tmp_path / "b"
    save(root, make_model(), features=FbankConfig(), tokenizer=CharTokenizer(),
         decoding=DecodingDefaults(chunk_frames=16))
    assert load(root).lm is None
    lm.save(root / "lm" / "words.arpa.gz")
    meta = json.loads((root / "bundle.json").read_text())
    meta["decoding"].update(lm="lm/words.arpa.gz", lm_weight=0.7, word_bonus=2.0)
    (root / "bundle.json").write_text(json.dumps(meta))
    b = load(root)
    assert b.lm is not None and b.lm.cfg == LmConfig(0.7, 2.0, 10.0) and b.lm.lm.order == 3
    dec = make_decoder("beam", b.tokenizer, frame_seconds=b.frame_seconds, lm=b.lm)
    assert isinstance(dec, CtcPrefixBeamDecoder) and dec.lm is b.lm

    meta["decoding"]["lm"] = "../outside.arpa"
    (root / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="inside the bundle"):
        load(root)
    meta["decoding"]["lm"] = "lm/missing.arpa"
    (root / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="decoding.lm 'lm/missing.arpa': language model not found"):
        load(root)
    meta["decoding"].update(lm="lm/words.arpa.gz", lm_weight=-0.2)
    (root / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="decoding .*: LM weight, oov_penalty and ilm_weight "
                                          "must be >= 0, got weight -0.2"):
        load(root)


def build_every_extension(dec: CtcPrefixBeamDecoder, frame: int, blank_lp: float,
                          cands: list[tuple[int, float]]) -> None:
    """The oracle: one frame of prefix beam search that builds and scores every extension (the
    beam before the bound existed), then keeps the best by a stable sort (ties: first reached)."""
    from models.decoding.ctc_beam import _Node
    from models.decoding.scoring import NEG_INF, logadd

    nxt: dict = {}
    index = {(n.parent, n.token): n for n in dec.beam}
    for node, (pb, pnb) in dec.beam.items():
        total = logadd(pb, pnb)
        s = nxt.setdefault(node, [NEG_INF, NEG_INF])
        s[0] = logadd(s[0], total + blank_lp)
        for c, lp in cands:
            if c == node.token:
                s[1] = logadd(s[1], pnb + lp)
                via = pb + lp
            else:
                via = total + lp
            if via == NEG_INF:
                continue
            child = index.get((node, c))
            if child is None:
                child = index[(node, c)] = _Node(c, node, *dec.scoring.extend(node.ctx, node.lm, c))
            if lp > child.peak:
                child.peak, child.frame = lp, frame
            cs = nxt.setdefault(child, [NEG_INF, NEG_INF])
            cs[1] = logadd(cs[1], via)
    ranked = sorted((kv for kv in nxt.items() if kv[0].bias != NEG_INF),
                    key=lambda kv: logadd(*kv[1]) + kv[0].bias, reverse=True)
    dec.beam = {n: (s[0], s[1]) for n, s in ranked[: dec.cfg.beam_size]}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("lexicon", [False, True])
@pytest.mark.parametrize("units", ["chars", "multi"])
@pytest.mark.parametrize("hotwords", [True, False])
@pytest.mark.parametrize("ties", [False, True])
def test_bounded_expansion_keeps_the_beam_of_building_every_extension(
        lm: ArpaLM, seed: int, lexicon: bool, units: str, hotwords: bool, ties: bool) -> None:
    """The beam makes a new prefix's node (and its LM and hotword states) only while the bound
    on its score can beat the beam's worst; against the oracle that builds and scores every
    extension, the surviving prefixes in order, their scores, token frames and the final text
    are identical: with an LM, with and without hotwords, the lexicon on or off, for characters
    and for tokens that spell several characters and spaces (grams, subwords), and with exact
    score ties (log probs on a grid of ln 2: the first prefix reached wins a tie)."""
    from models.decoding import Hotwords
    from models.decoding.ctc_beam import BeamConfig
    from models.tokenizer import DEFAULT_SYMBOLS

    tok = (CharTokenizer() if units == "chars" else
           CharTokenizer((*DEFAULT_SYMBOLS, "ca", " the", "at ", " mat ")))
    if ties:
        g = torch.Generator().manual_seed(seed)
        lp = -math.log(2) * torch.randint(1, 6, (40, tok.vocab_size), generator=g).double()
    else:
        lp = random_log_probs(40, tok.vocab_size, seed, sharp=4.0)
    decs = []
    for oracle in (False, True):
        dec = CtcPrefixBeamDecoder(tok, frame_seconds=0.04,
                                   config=BeamConfig(beam_size=4 if ties else 6, top_k=10,
                                                     token_floor=-12.0),
                                   hotwords=(Hotwords([("cat", 2.0), ("the mat", 1.5)])
                                             if hotwords else None),
                                   lm=LmFusion(lm, LmConfig(0.7, 2.0, 5.0, lexicon=lexicon)))
        if oracle:
            dec._step = functools.partial(build_every_extension, dec)  # type: ignore[method-assign]
        for a, b in itertools.pairwise(range(0, 41, 10)):
            dec.update(lp[a:b])
        decs.append(dec)
    bounded, every = decs
    assert ([(n.emissions(), s) for n, s in every.beam.items()]
            == [(n.emissions(), s) for n, s in bounded.beam.items()])  # in order, exact scores
    assert every.nbest_ids() == bounded.nbest_ids()
    assert bounded.finalize().text == every.finalize().text


@pytest.mark.parametrize(("weight", "penalty", "ilm"),
                         [(-0.1, 10.0, 0.0), (0.5, -1.0, 0.0), (math.nan, 10.0, 0.0),
                          (0.5, 10.0, -0.2)])
def test_negative_lm_weight_oov_penalty_or_ilm_weight_is_refused_by_name(
        weight: float, penalty: float, ilm: float) -> None:
    with pytest.raises(ValueError, match="LM weight, oov_penalty and ilm_weight must be >= 0, "
                                         f"got weight {weight}, oov_penalty {penalty}, "
                                         f"ilm_weight {ilm}"):
        LmConfig(weight, 1.0, penalty, ilm_weight=ilm)


def test_lookahead_charges_partial_words_their_unigram_mass(lm: ArpaLM) -> None:
    """lookahead=True: a partial word that starts vocabulary words ranks at weight * ln(the
    unigram mass of those words), a letter at a time; its space swaps that estimate for the
    word's real (context) score, as without lookahead; a prefix of no word still pays <unk>."""
    plain = LmFusion(lm, LmConfig(0.5, 1.0))
    look = LmFusion(lm, LmConfig(0.5, 1.0, lookahead=True))

    def mass(prefix: str) -> float:
        return 0.5 * math.log(sum(math.exp(lm.logprob((), w)) for w in lm.vocab
                                  if w.startswith(prefix)))

    a, b = plain.start, look.start
    for ch, prefix in zip("ma", ["m", "ma"], strict=True):
        a, b = plain.extend(a, ch), look.extend(b, ch)
        assert a.rank == 0.0 and b.rank == pytest.approx(mass(prefix))
    assert mass("m") > mass("ma")  # "m" starts "mat" and "my", "ma" only "mat"
    a, b = plain.extend(a, "t"), look.extend(b, "t")
    assert b.rank == pytest.approx(0.5 * lm.logprob((), "mat")) == pytest.approx(mass("ma"))
    a, b = plain.extend(a, " "), look.extend(b, " ")
    assert b == a and b.rank == a.score  # the word's real score, nothing provisional left
    x, y = plain.extend(a, "q"), look.extend(b, "q")  # no vocabulary word starts with "q"
    assert y.rank == x.rank == a.score + plain.unk_price


def test_lookahead_needs_an_n_gram_and_travels_in_the_bundle(lm: ArpaLM, tmp_path) -> None:
    """A neural LM has no context-free unigrams: lookahead is refused by name. In a bundle,
    decoding.lm_lookahead turns it on; a negative decoding.ilm_weight is refused by field."""
    from models.lm.neural import NeuralLm, NeuralLmConfig, NeuralWordLM

    vocab = ["<unk>", "<s>", "</s>", "cat", "mat"]
    neural = NeuralWordLM(NeuralLm(NeuralLmConfig(type="lstm", vocab=vocab, embed=4,
                                                  hidden=4)).eval())
    with pytest.raises(ValueError, match="lookahead needs an n-gram"):
        LmFusion(neural, LmConfig(0.5, 1.0, lookahead=True))
    path = save(tmp_path / "b", make_model(), features=FbankConfig(),
                tokenizer=CharTokenizer(), decoding=DecodingDefaults(decoder="beam"))
    lm.save(path / "lm.arpa")
    meta = json.loads((path / "bundle.json").read_text())
    meta["decoding"].update(lm="lm.arpa", lm_lookahead=True)
    (path / "bundle.json").write_text(json.dumps(meta))
    fusion = load(path).lm
    assert fusion is not None and fusion.cfg.lookahead and fusion.look["ca"] < 0
    meta = json.loads((path / "bundle.json").read_text())
    meta["decoding"]["ilm_weight"] = -1.0
    (path / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="ilm_weight"):
        load(path)
