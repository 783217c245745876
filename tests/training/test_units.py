"""Sentencepiece subword units: the blank and <unk> ids, every character a unit, encode/decode
round trips, tokens.txt + tokens.model round trips, and what decoders make of the units
(timed words, LM fusion and hotwords through each unit's spelling)."""

from __future__ import annotations

import math
import random

import pytest
import torch

from models.decoding import BeamConfig, CtcGreedyDecoder, CtcPrefixBeamDecoder
from models.decoding.hotwords import Hotwords
from models.tokenizer import BLANK, DEFAULT_SYMBOLS, UNK, CharTokenizer, SubwordTokenizer
from training.units import train_subword

WORDS = ("set an alarm for seven thirty play some music turn on the kitchen lights "
         "what's the weather like tomorrow call my mother").split()


@pytest.fixture(scope="module")
def tok() -> SubwordTokenizer:
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) for _ in range(3000)]
    return train_subword(texts, 48)


def test_ids_and_alphabet(tok) -> None:
    assert tok.vocab_size == 48 and tok.symbols[0] == BLANK and tok.symbols[1] == UNK
    units = set(tok.symbols)
    assert all(ch in units for ch in DEFAULT_SYMBOLS[1:]), "every character must be a unit"
    assert any(len(s) > 3 and s.startswith(" ") for s in tok.symbols), tok.symbols


def test_encode_decode_round_trip(tok) -> None:
    text = "call my mother tomorrow"
    ids = tok.encode(text)
    assert 0 not in ids and 1 not in ids
    assert len(ids) < len(text), "frequent words must become fewer units than characters"
    assert tok.decode(ids).strip() == text
    # words never seen in training still encode, letter by letter
    assert tok.decode(tok.encode("zebra quiz")).strip() == "zebra quiz"
    with pytest.raises(ValueError, match="character 'Q' at position 0"):
        tok.encode("Quiz")


def test_save_load_round_trip(tok, tmp_path) -> None:
    tok.save(tmp_path / "tokens.txt")
    lines = (tmp_path / "tokens.txt").read_text(encoding="utf-8").splitlines()
    assert lines[:2] == ["<blk> 0", "<unk> 1"]
    assert any(line.startswith("\u2581") for line in lines), "a word start is written as ▁"
    loaded = CharTokenizer.load(tmp_path / "tokens.txt")
    assert isinstance(loaded, SubwordTokenizer) and loaded.symbols == tok.symbols
    assert loaded.encode("play some music") == tok.encode("play some music")
    (tmp_path / "tokens.model").unlink()
    assert type(CharTokenizer.load(tmp_path / "tokens.txt")) is CharTokenizer


def test_vocab_size_is_checked() -> None:
    with pytest.raises(ValueError, match="vocab_size must be >= 30"):
        train_subword(["a b c"], 20)


def spiky(tok, ids: list[int], frames_per_token: int = 3) -> torch.Tensor:
    """Log probs (T, V) that emit `ids` one after another, blanks between."""
    rows = []
    for i in ids:
        for k in (i, 0, 0)[:frames_per_token]:
            row = torch.full((tok.vocab_size,), -12.0)
            row[k] = 0.0
            rows.append(torch.log_softmax(row, dim=-1))
    return torch.stack(rows)


def test_greedy_words_and_timings(tok) -> None:
    ids = tok.encode("turn on the kitchen lights")
    dec = CtcGreedyDecoder(tok, frame_seconds=0.08)
    dec.update(spiky(tok, ids))
    hyp = dec.finalize()
    assert hyp.text == "turn on the kitchen lights"
    assert [w.word for w in hyp.words] == hyp.text.split()
    starts = [w.start for w in hyp.words]
    assert starts == sorted(starts) and starts[0] == 0.0
    # a word spans all its units: the last word ends after its last unit's frame
    assert hyp.words[-1].end == pytest.approx(3 * (len(ids) - 1) * 0.08 + 0.08)


def test_hotword_biases_subword_beam(tok) -> None:
    """Two readings tie acoustically; a hotword spelled in characters picks its reading."""
    a, b = tok.encode("call my mother"), tok.encode("call my music")
    lp_a, lp_b = spiky(tok, a), spiky(tok, b)
    n = max(len(lp_a), len(lp_b))
    pad = torch.log_softmax(torch.where(torch.arange(tok.vocab_size) == 0, 0.0, -12.0), -1)
    lp_a = torch.cat([lp_a, pad.expand(n - len(lp_a), -1)])
    lp_b = torch.cat([lp_b, pad.expand(n - len(lp_b), -1)])
    mixed = torch.logaddexp(lp_a, lp_b) - math.log(2.0)
    for phrase in ("mother", "music"):
        dec = CtcPrefixBeamDecoder(tok, frame_seconds=0.08, config=BeamConfig(beam_size=8),
                                   hotwords=Hotwords([(phrase, 3.0)]))
        dec.update(mixed)
        assert dec.finalize().text == f"call my {phrase}"


def test_too_large_a_vocabulary_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="vocab_size 500 is too large for this text"):
        train_subword(["set an alarm"] * 50, 500)
