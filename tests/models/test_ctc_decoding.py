"""CTC decoders: prefix beam search against exhaustive enumeration, streaming == whole."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.decoding import BeamConfig, CtcGreedyDecoder, CtcPrefixBeamDecoder, Hotwords, make_decoder
from models.tokenizer import CharTokenizer

SMALL = CharTokenizer(("<blk>", " ", "a", "b"))


def exact_prefix_logprobs(log_probs: torch.Tensor) -> dict[tuple[int, ...], float]:
    """Sum over every alignment (V^T of them) of its probability, keyed by collapsed labels."""
    T, V = log_probs.shape
    out: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(V), repeat=T):
        lp = sum(float(log_probs[t, k]) for t, k in enumerate(path))
        labels = tuple(k for k, _ in itertools.groupby(path) if k != 0)
        out[labels] = math.log(math.exp(out[labels]) + math.exp(lp)) if labels in out else lp
    return out


def random_log_probs(T: int, V: int, seed: int, sharp: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(sharp * torch.randn(T, V, generator=g), dim=-1)


@pytest.mark.parametrize("seed", range(6))
def test_wide_beam_finds_the_most_probable_labelling(seed: int) -> None:
    lp = random_log_probs(6, 4, seed)
    exact = exact_prefix_logprobs(lp)
    dec = CtcPrefixBeamDecoder(SMALL, frame_seconds=0.04,
                               config=BeamConfig(beam_size=4096, top_k=4, token_floor=-math.inf))
    dec.update(lp)
    for text, score in dec.nbest():
        labels = tuple(SMALL.encode(text))
        assert score == pytest.approx(exact[labels], abs=1e-9)
    best_labels = max(exact, key=lambda k: exact[k])
    assert dec.nbest()[0][0] == SMALL.decode(list(best_labels))


def test_beam_beats_greedy_where_alignments_add_up() -> None:
    # per frame: blank .5, "a" .4, "b" .1 -> greedy says "", but P("a") = .56 > P("") = .25
    lp = torch.tensor([[0.5, 0.0, 0.4, 0.1]] * 2).clamp_min(1e-9).log()
    greedy = CtcGreedyDecoder(SMALL, frame_seconds=0.04)
    greedy.update(lp)
    beam = CtcPrefixBeamDecoder(SMALL, frame_seconds=0.04)
    beam.update(lp)
    assert greedy.finalize().text == ""
    assert beam.finalize().text == "a"


def spiky(text: str, tok: CharTokenizer, seed: int) -> torch.Tensor:
    """Peaky CTC-like outputs: each token one frame spike between blank runs."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for k in [0, *sum(([t, 0, 0] for t in tok.encode(text)), [])]:
        logits = torch.randn(tok.vocab_size, generator=g)
        logits[k] += 8.0
        rows.append(logits)
    return torch.log_softmax(torch.stack(rows), dim=-1)


def test_peaky_outputs_give_the_greedy_result_with_timestamps() -> None:
    tok = CharTokenizer()
    lp = spiky("the cat sat", tok, seed=1)
    greedy = make_decoder("greedy", tok, frame_seconds=0.04)
    beam = make_decoder("beam", tok, frame_seconds=0.04)
    greedy.update(lp)
    beam.update(lp)
    g, b = greedy.finalize(), beam.finalize()
    assert g.text == b.text == "the cat sat"
    assert [w.word for w in b.words] == ["the", "cat", "sat"]
    # token i spikes at frame 1 + 3 i; "the" = tokens 0..2, "cat" = tokens 4..6
    assert (b.words[0].start, b.words[0].end) == pytest.approx((0.04, (7 + 1) * 0.04))
    assert b.words[1].start == pytest.approx(13 * 0.04)
    assert [(w.start, w.end) for w in b.words] == [(w.start, w.end) for w in g.words]
    assert all(0.5 < w.confidence <= 1.0 for w in b.words)


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=6), seed=st.integers(0, 99))
def test_streaming_beam_equals_whole_utterance(cuts: list[int], seed: int) -> None:
    tok = CharTokenizer()
    lp = random_log_probs(40, tok.vocab_size, seed, sharp=3.0)
    whole = CtcPrefixBeamDecoder(tok, frame_seconds=0.04)
    whole.update(lp)
    parts = CtcPrefixBeamDecoder(tok, frame_seconds=0.04)
    edges = [0, *sorted(cuts), 40]
    for a, b in itertools.pairwise(edges):
        parts.update(lp[a:b])
        parts.result()  # partials in between must not disturb the state
    assert parts.finalize() == whole.finalize()
    assert parts.nbest() == whole.nbest()


def test_reset_and_bad_config() -> None:
    tok = CharTokenizer()
    dec = CtcPrefixBeamDecoder(tok, frame_seconds=0.04)
    dec.update(spiky("hi", tok, 0))
    dec.reset()
    assert dec.finalize().text == ""
    with pytest.raises(ValueError, match="beam_size"):
        CtcPrefixBeamDecoder(tok, frame_seconds=0.04, config=BeamConfig(beam_size=0))
    with pytest.raises(ValueError, match="decoder must be one of"):
        make_decoder("viterbi", tok, frame_seconds=0.04)


def ambiguous(text: str, alt: dict[int, tuple[str, float]], tok: CharTokenizer) -> torch.Tensor:
    """Spikes for `text`; at char position i in `alt`, a rival with probability share p (a char,
    or "" for blank: the char may be missing)."""
    rows = []
    for i, ch in enumerate(text):
        probs = torch.full((tok.vocab_size,), 1e-4)
        if i in alt:
            rival, p = alt[i]
            probs[tok.encode(ch)[0]] = 1 - p
            probs[tok.encode(rival)[0] if rival else tok.blank_id] = p
        else:
            probs[tok.encode(ch)[0]] = 1.0
        rows += [probs, torch.eye(tok.vocab_size)[0] + 1e-4]  # the char, then a blank
    return (torch.stack(rows) / torch.stack(rows).sum(-1, keepdim=True)).log()


def decode(lp: torch.Tensor, hotwords=None) -> str:
    dec = make_decoder("beam", CharTokenizer(), frame_seconds=0.04, hotwords=hotwords)
    dec.update(lp)
    return dec.finalize().text


def test_hotword_tips_an_ambiguous_word() -> None:
    tok = CharTokenizer()
    lp = ambiguous("call stella now", {9: ("", 0.55)}, tok)  # "stela" 0.55 vs "stella" 0.45
    assert decode(lp) == "call stela now"
    assert decode(lp, [("stella", 1.0)]) == "call stella now"
    assert decode(lp, [("kitchen lights", 1.0)]) == "call stela now"  # unrelated: no effect


def test_a_hotword_reaches_letters_below_the_plain_token_floor() -> None:
    """Without hotwords the beam tries tokens above 1e-3 a frame; with hotwords down to 1e-4,
    so a boost can lift a letter the acoustics gave 5e-4 ("cat" in "the cut sat")."""
    tok = CharTokenizer()
    lp = ambiguous("the cut sat", {5: ("a", 5e-4)}, tok)
    assert decode(lp) == "the cut sat"
    assert decode(lp, [("cat", 4.0)]) == "the cat sat"
    plain = CtcPrefixBeamDecoder(tok, frame_seconds=0.04,
                                 config=BeamConfig(hotword_token_floor=math.log(1e-3)),
                                 hotwords=Hotwords([("cat", 4.0)]))
    plain.update(lp)
    assert plain.finalize().text == "the cut sat"  # at 1e-3 the "a" is never tried
    no_hot = CtcPrefixBeamDecoder(tok, frame_seconds=0.04,
                                  config=BeamConfig(hotword_token_floor=math.log(1e-9)))
    no_hot.update(lp)
    assert no_hot.floor == math.log(1e-3)  # without hotwords the hotword floor is not read
    assert no_hot.finalize().text == "the cut sat"


def test_partial_hotword_match_earns_nothing() -> None:
    tok = CharTokenizer()
    lp = ambiguous("a kat", {2: ("c", 0.45)}, tok)  # "kat" 0.55 vs "cat" 0.45
    assert decode(lp, [("cat", 1.0)]) == "a cat"
    # "catherine" shares the prefix "cat" but is never completed: its bonus is taken back
    assert decode(lp, [("catherine", 3.0)]) == "a kat"


def test_multiword_hotword_and_bad_hotwords() -> None:
    tok = CharTokenizer()
    lp = ambiguous("kitchen lights", {10: ("", 0.55)}, tok)
    assert decode(lp) == "kitchen lihts"
    assert decode(lp, [("kitchen lights", 1.0)]) == "kitchen lights"
    assert decode(lp, [("lights on", 1.0)]) == "kitchen lihts"  # phrase not completed
    with pytest.raises(ValueError, match="boost must be in"):
        decode(lp, [("x", 0.0)])
    with pytest.raises(ValueError, match="hotword 'caf\u00e9'"):
        decode(lp, [("caf\u00e9", 1.0)])
    with pytest.raises(ValueError, match="must not be empty"):
        decode(lp, [("  ", 1.0)])


def test_advance_batch_equals_each_streams_own_update() -> None:
    """One argmax over a (B, T', V) batch gives each stream the tokens, frames and
    confidences its own `update` would, ties (first maximum) included, chunk after chunk."""
    import numpy as np

    from models.decoding.ctc_greedy import advance_batch

    tok = CharTokenizer()
    rng = np.random.default_rng(0)
    alone = [CtcGreedyDecoder(tok, frame_seconds=0.04) for _ in range(3)]
    batched = [CtcGreedyDecoder(tok, frame_seconds=0.04) for _ in range(3)]
    for _ in range(4):
        logits = rng.standard_normal((3, 8, tok.vocab_size)).astype(np.float32) * 3
        logits[1, 2, 5] = logits[1, 2, 7] = logits[1, 2].max() + 1  # a tie
        lp = torch.log_softmax(torch.from_numpy(logits), dim=-1).numpy()
        for b, d in enumerate(alone):
            d.update(torch.from_numpy(lp[b]))
        advance_batch(batched, lp)
    for a, b in zip(alone, batched, strict=True):
        assert a.tokens == b.tokens and a.frames == b.frames == 32
        assert a.result().text == b.result().text
