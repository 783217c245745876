"""Gram sets: frequent within-word n-grams, refinement by emission, the gram tokenizer."""

from __future__ import annotations

from collections import Counter

import pytest

from models.decoding import make_decoder
from tests.models.test_ctc_decoding import spiky
from training.grams import gram_tokenizer, refine_grams, select_grams


def test_selection_counts_within_words_only() -> None:
    grams = select_grams(["the then", "then the", "a b"], max_n=3, size=4)
    assert grams == ["he", "th", "the", "en"]  # ties alphabetical; "e t" spans a space: no gram
    assert all(" " not in g for g in grams)


def test_refine_and_tokenizer() -> None:
    assert refine_grams(["th", "he", "qz"], Counter({"th": 3, "qz": 0})) == ["th"]
    tok = gram_tokenizer(["th", "ing"])
    assert tok.symbols[-2:] == ("th", "ing") and tok.vocab_size == 31
    with pytest.raises(ValueError, match="no space"):
        gram_tokenizer(["a b"])


def test_decoders_spell_grams() -> None:
    tok = gram_tokenizer(["th", "ing"])
    ids = [tok.symbols.index(s) for s in ["th", "i", "n", "g", " ", "s", "ing"]]
    lp = spiky("x" * len(ids), tok, seed=0)  # shape only; put the spikes on our ids
    for row, k in zip(range(1, lp.shape[0], 3), ids, strict=False):
        lp[row] = lp[row].roll(k - int(lp[row].argmax()))
    for name in ("greedy", "beam"):
        dec = make_decoder(name, tok, frame_seconds=0.04)
        dec.update(lp)
        hyp = dec.finalize()
        assert hyp.text == "thing sing" and [w.word for w in hyp.words] == ["thing", "sing"]


def test_refine_command_counts_what_a_bundle_emits(tmp_path, capsys) -> None:
    import json

    from tests.models.test_cli import tiny_bundle
    from training.grams import main

    bundle = tiny_bundle(tmp_path / "g", head="gram_ctc")  # random weights: emits some grams
    corpus = tmp_path / "c"
    from training.data.synth.corpus import SynthConfig, synthesize_corpus

    synthesize_corpus(SynthConfig(out=corpus, hours=0.002, seed=1, jobs=1, engines=("flite",),
                                  split_weights={"train": 0.5, "dev": 0.5, "test": 0.0}),
                      progress=False)
    assert main(["refine", "--bundle", str(bundle), "--manifest",
                 str(corpus / "cuts_dev.jsonl.gz"), "--min-count", "1"]) == 0
    kept = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(kept) <= {"th", "he", "ing"}
    with pytest.raises(SystemExit, match="not a Gram-CTC bundle"):
        main(["refine", "--bundle", str(tiny_bundle(tmp_path / "c2")), "--manifest",
              str(corpus / "cuts_dev.jsonl.gz")])
