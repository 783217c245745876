"""LM interpolation and published count tables: the mixture is the weighted sum of its parts'
probabilities (a distribution again), a count table estimates proper distributions, the CLI
builds, measures (perplexity) and attaches a mixture that a bundle then decodes with."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from models.lm.arpa import EOS, UNK, ArpaError, ArpaLM
from models.lm.mixture import MixtureLM, load_lms
from tests.training.test_ngram import random_corpus
from training.lm.counts import read_counts
from training.lm.ngram import estimate, estimate_counts


@pytest.fixture(scope="module")
def two() -> tuple[ArpaLM, ArpaLM]:
    return ArpaLM(estimate(random_corpus(1), 3)), ArpaLM(estimate(random_corpus(2), 2))


def test_mixture_is_the_weighted_sum(two) -> None:
    a, b = two
    mix = MixtureLM([a, b], [0.7, 0.3])
    assert mix.order == 3 and mix.vocab == a.vocab | b.vocab
    for ctx in [(), ("a",), ("a", "b"), ("<s>", "c"), ("zz", "a")]:
        for w in ["a", "g", EOS]:
            want = 0.7 * math.exp(a.logprob(ctx, w)) + 0.3 * math.exp(b.logprob(ctx, w))
            assert mix.logprob(ctx, w) == pytest.approx(math.log(want), abs=1e-12)
    # same vocabularies: each context's mixture is a distribution again
    outcomes = [*sorted(mix.vocab), EOS, UNK]
    for ctx in [(), ("a",), ("b", "c")]:
        assert sum(math.exp(mix.logprob(ctx, w)) for w in outcomes) == pytest.approx(1.0, abs=1e-9)


def test_mixture_weights_are_checked(two, tmp_path) -> None:
    a, b = two
    with pytest.raises(ArpaError, match="sum to 1"):
        MixtureLM([a, b], [0.7, 0.7])
    with pytest.raises(ArpaError, match=">= 2 LMs and one weight each"):
        MixtureLM([a], [1.0])
    a.save(tmp_path / "a.arpa")
    b.save(tmp_path / "b.arpa")
    with pytest.raises(ArpaError, match="need mixture weights"):
        load_lms([tmp_path / "a.arpa", tmp_path / "b.arpa"])
    assert isinstance(load_lms([tmp_path / "a.arpa"]), ArpaLM)


def test_count_table_estimates_distributions(tmp_path) -> None:
    table = tmp_path / "bigrams.txt"
    table.write_text("the cat 3000\nthe dog 1000\na cat 2000\nsee the 5000\nCafé x 9000\n"
                     "the 1st 4000\n")
    counts, order = read_counts(table)
    assert order == 2 and counts == Counter({("the", "cat"): 3, ("the", "dog"): 1,
                                             ("a", "cat"): 2, ("see", "the"): 5})
    lm = ArpaLM(estimate_counts(counts, 2))
    outcomes = [*sorted(lm.vocab), EOS, UNK]
    for ctx in [(), ("the",), ("a",), ("unseen",)]:
        assert sum(math.exp(lm.logprob(ctx, w)) for w in outcomes) == pytest.approx(1.0, abs=1e-9)
    assert lm.logprob(("the",), "cat") > lm.logprob(("the",), "dog")
    bad = tmp_path / "bad.txt"
    bad.write_text("the cat 3\nthe big cat 2\n")
    with pytest.raises(ValueError, match="3 words, the table's lines have 2"):
        read_counts(bad)


def test_build_ppl_attach_a_mixture(tmp_path, capsys) -> None:
    import gzip
    import json

    from clients.cli import main
    from models.bundle import DecodingDefaults, load, save
    from models.decoding import bundle_decoder
    from models.features import FbankConfig
    from models.tokenizer import CharTokenizer
    from tests.models.test_encoder import make_model

    text = tmp_path / "text.txt"
    text.write_text("turn on the light\nturn off the light\n")
    table = tmp_path / "bigrams.txt"
    table.write_text("the fan 40\nturn on 20\non the 30\n")
    a, b = tmp_path / "a.arpa", tmp_path / "b.arpa"
    assert main(["lm", "build", "--out", str(a), "--order", "2", "--no-corpus-text",
                 "--text", str(text)]) == 0
    assert main(["lm", "build", "--out", str(b), "--counts", str(table)]) == 0
    man = tmp_path / "m.jsonl.gz"
    with gzip.open(man, "wt") as f:
        f.write(json.dumps({"supervisions": [{"text": "turn on the fan",
                                               "custom": {"domain": "commands"}}]}) + "\n")
    capsys.readouterr()
    assert main(["lm", "ppl", "--lm", str(a), "--lm", str(b), "--mix-weights", "0.5,0.5",
                 "--manifest", str(man)]) == 0
    mix = load_lms([a, b], [0.5, 0.5])
    want = math.exp(-mix.sentence_logprob("turn on the fan".split()) / 5)
    assert f"all: perplexity {round(want, 1)} (5 tokens" in capsys.readouterr().out
    root = tmp_path / "bundle"
    save(root, make_model(), features=FbankConfig(), tokenizer=CharTokenizer(),
         decoding=DecodingDefaults(chunk_frames=16))
    assert main(["lm", "attach", "--bundle", str(root), "--lm", str(a), "--lm", str(b),
                 "--mix-weights", "0.8,0.2", "--weight", "0.4", "--bonus", "1",
                 "--decoder", "beam"]) == 0
    bundle = load(root)
    assert bundle.decoding.lm_mix == ("lm/b.arpa",) and bundle.decoding.lm_mix_weights == (0.8, 0.2)
    assert isinstance(bundle.lm.lm, MixtureLM) and "fan" in bundle.lm.lm.vocab
    dec = bundle_decoder(bundle)
    dec.update(__import__("torch").randn(20, 29).log_softmax(-1))
    assert isinstance(dec.finalize().text, str)
    with pytest.raises(SystemExit, match="one per --lm"):
        main(["lm", "attach", "--bundle", str(root), "--lm", str(a), "--lm", str(b),
              "--weight", "0.4", "--bonus", "1"])
