"""Kneser-Ney estimation: proper distributions, KN's continuation counts, ARPA round trip."""

from __future__ import annotations

import math
import random

import pytest

from models.lm.arpa import EOS, UNK, ArpaLM
from training.lm.ngram import estimate


def random_corpus(seed: int, n: int = 300) -> list[list[str]]:
    r = random.Random(seed)
    words = "a b c d e f g".split()
    return [[r.choice(words) for _ in range(r.randint(1, 6))] for _ in range(n)]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_context_is_a_distribution(order: int) -> None:
    lm = ArpaLM(estimate(random_corpus(order), order, vocabulary=["zq"]))
    outcomes = [*sorted(lm.vocab), EOS, UNK]
    contexts = [(), ("<s>",), ("never-seen",), ("a", "never-seen")]
    contexts += [g for table in lm.ngrams[:-1] for g in table if g[-1] != EOS]
    for ctx in contexts:
        total = sum(math.exp(lm.logprob(ctx, w)) for w in outcomes)
        assert total == pytest.approx(1.0, abs=1e-9), ctx


def test_continuation_counts_not_raw_counts_rank_lower_orders() -> None:
    # "francisco" is as frequent as "dog" but only ever follows "san": after an unseen
    # context KN must prefer "dog", which follows many words
    sents = [["san", "francisco"]] * 20
    sents += [[w, "dog"] for w in "a the my your his her our one big red".split() * 2]
    lm = ArpaLM(estimate(sents, 2))
    assert lm.logprob(("unseen",), "dog") > lm.logprob(("unseen",), "francisco") + 1.0
    assert lm.logprob(("san",), "francisco") > math.log(0.9)


def test_arpa_round_trip(tmp_path) -> None:
    lm = ArpaLM(estimate(random_corpus(7), 3))
    path = tmp_path / "lm.arpa.gz"
    lm.save(path)
    again = ArpaLM.load(path)
    for ctx in [(), ("a",), ("a", "b"), ("<s>", "c")]:
        for w in ["a", "g", EOS, "zzz"]:
            assert again.logprob(ctx, w) == pytest.approx(lm.logprob(ctx, w), abs=1e-4)


def test_unknown_words_cost_more_than_known_ones() -> None:
    lm = ArpaLM(estimate(random_corpus(3), 3))
    assert lm.logprob(("a",), "zzz") < min(lm.logprob(("a",), w) for w in lm.vocab)
    assert lm.sentence_logprob("a b c".split()) > lm.sentence_logprob("a zzz c".split())


def test_build_and_attach_commands(tmp_path, capsys) -> None:
    from clients.cli import main
    from models.bundle import DecodingDefaults, load, save
    from models.features import FbankConfig
    from models.tokenizer import CharTokenizer
    from tests.models.test_encoder import make_model

    text = tmp_path / "text.txt"
    text.write_text("turn on the light\nturn off the light\n\nturn on the fan\n")
    arpa = tmp_path / "lm.arpa"
    assert main(["lm", "build", "--out", str(arpa), "--order", "2", "--no-corpus-text",
                 "--text", str(text)]) == 0
    assert "3 sentences, 12 words" in capsys.readouterr().out
    lm = ArpaLM.load(arpa)
    assert lm.order == 2 and lm.vocab == {"turn", "on", "off", "the", "light", "fan"}

    root = tmp_path / "bundle"
    save(root, make_model(), features=FbankConfig(), tokenizer=CharTokenizer(),
         decoding=DecodingDefaults(chunk_frames=16))
    assert main(["lm", "attach", "--bundle", str(root), "--lm", str(arpa), "--weight", "0.4",
                 "--bonus", "1.5", "--decoder", "beam"]) == 0
    b = load(root)
    assert b.decoding.decoder == "beam" and b.decoding.lm == "lm/lm.arpa"
    assert b.lm is not None and b.lm.cfg.weight == 0.4 and b.lm.lm.vocab == lm.vocab
    assert b.decoding.beam_size == 8 and not b.decoding.lm_lookahead  # untouched by default
    # the rest of a tuned beam (chorus lm tune's grid): beam size, lookahead, ILM weight
    assert main(["lm", "attach", "--bundle", str(root), "--lm", str(arpa), "--weight", "0.4",
                 "--bonus", "1.5", "--beam-size", "16", "--lookahead", "--ilm-weight",
                 "0.1"]) == 0
    b = load(root)
    assert (b.decoding.beam_size, b.decoding.lm_lookahead, b.decoding.ilm_weight) == (16, True,
                                                                                     0.1)
    assert b.lm is not None and b.lm.cfg.lookahead and b.lm.cfg.ilm_weight == 0.1
    with pytest.raises(SystemExit, match="--beam-size: expected >= 1, got 0"):
        main(["lm", "attach", "--bundle", str(root), "--lm", str(arpa), "--weight", "0.4",
              "--bonus", "1.5", "--beam-size", "0"])
    before = (root / "bundle.json").read_text()
    with pytest.raises(SystemExit, match="ilm_weight must be >= 0"):
        main(["lm", "attach", "--bundle", str(root), "--lm", str(arpa), "--weight", "0.4",
              "--bonus", "1.5", "--ilm-weight", "-1"])
    assert (root / "bundle.json").read_text() == before  # refused before writing
    with pytest.raises(SystemExit, match="file not found"):
        main(["lm", "build", "--out", str(arpa), "--no-corpus-text", "--text", "nope.txt"])
