"""Scoring (jiwer, pooled per group) and `chorus eval` end to end with the pocketsphinx peer."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.eval.metrics import breakdown, edit_counts, error_rates


def test_error_rates_pool_edits() -> None:
    r = error_rates(["the cat sat", "a dog"], ["the cat sat down", ""])
    # 1 insertion + 2 deletions over 5 reference words
    assert (r.words, r.insertions, r.deletions, r.substitutions) == (5, 1, 2, 0)
    assert r.wer == pytest.approx(3 / 5)
    per = breakdown(["a b", "c d", "e f"], ["a b", "c x", "e f"], ["x", "y", "x"])
    assert per["x"].wer == 0.0 and per["y"].wer == 0.5 and per["y"].cer == pytest.approx(0.5 / 1.5)
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        error_rates(["a", "b"], ["a"])


def test_edit_counts_of_shards_pool_to_the_whole_set() -> None:
    refs = ["the cat sat", "a dog", "one two three four five six", "x"]
    hyps = ["the cat sat down", "", "one too three for five six", "x"]
    whole = edit_counts(refs, hyps)
    shards = [edit_counts(refs[:1], hyps[:1]), edit_counts(refs[1:], hyps[1:])]
    assert tuple(map(sum, zip(*shards, strict=True))) == whole
    r = error_rates(refs, hyps)
    assert whole[0] / whole[1] == pytest.approx(r.wer) and whole[2] / whole[3] == pytest.approx(r.cer)
    # the mean of the shards' WERs is not the set's WER: why dev WER pools counts across ranks
    assert sum(s[0] / s[1] for s in shards) / 2 != pytest.approx(r.wer)


def test_pocketsphinx_peer_transcribes(tmp_path) -> None:
    from models.audio import load_audio
    from training.eval.peers import make_peer

    wav = tmp_path / "a.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", "the weather is nice today", "-o", str(wav)],
                   check=True)
    text = make_peer("pocketsphinx").transcribe(load_audio(wav, sample_rate=16_000))
    assert error_rates(["the weather is nice today"], [text]).wer <= 0.6, text


def test_eval_cli_with_peer(tmp_path) -> None:
    from tests.models.test_cli import tiny_bundle
    from training.data.synth.corpus import SynthConfig, synthesize_corpus

    synthesize_corpus(SynthConfig(out=tmp_path / "c", hours=0.005, seed=2, jobs=2,
                                  engines=("flite", "espeak-ng"),
                                  split_weights={"train": 0.0, "dev": 0.0, "test": 1.0}),
                      progress=False)
    bundle = tiny_bundle(tmp_path / "b")
    proc = subprocess.run(
        [sys.executable, "-m", "clients.cli", "eval", "--bundle", str(bundle), "--manifest",
         str(tmp_path / "c/cuts_test.jsonl.gz"), "--peer", "pocketsphinx", "--decoder", "beam",
         "--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md")],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert set(r["systems"]) == {"chorus", "pocketsphinx"} and r["decoder"] == "beam"
    n = r["utterances"]
    assert n >= 2 and len(r["hypotheses"]) == n
    for s in r["systems"].values():
        assert sum(g["utterances"] for g in s["per_engine"].values()) == n
        assert s["cpu_seconds_per_audio_second"] > 0
    # the peer is a working recogniser: far better than the random-weight bundle
    assert r["systems"]["pocketsphinx"]["overall"]["wer"] < r["systems"]["chorus"]["overall"]["wer"]
    assert "| engine |" in (tmp_path / "r.md").read_text()
    # the test split holds out its voices: voices.json beside it marks every utterance unseen
    assert {h["heard"] for h in r["hypotheses"]} == {"unseen"}
    assert r["systems"]["chorus"]["per_heard"]["unseen"]["utterances"] == n
    assert "| voice in training |" in (tmp_path / "r.md").read_text()


def test_eval_cli_passes_lm_lookahead_and_ilm_weight_to_the_fusion(tmp_path) -> None:
    """--lm-lookahead and --ilm-weight reach the decoder's LmFusion: the result records them,
    and lookahead changes nothing it must not (same utterances, a finite WER)."""
    from models.lm.arpa import ArpaLM
    from tests.models.test_cli import tiny_bundle
    from training.data.synth.corpus import SynthConfig, synthesize_corpus
    from training.lm.ngram import estimate

    synthesize_corpus(SynthConfig(out=tmp_path / "c", hours=0.003, seed=3, jobs=1,
                                  engines=("flite",),
                                  split_weights={"train": 0.0, "dev": 0.0, "test": 1.0}),
                      progress=False)
    ArpaLM(estimate([["turn", "on", "the", "light"]] * 3, 2)).save(tmp_path / "lm.arpa")
    bundle = tiny_bundle(tmp_path / "b")
    proc = subprocess.run(
        [sys.executable, "-m", "clients.cli", "eval", "--bundle", str(bundle), "--manifest",
         str(tmp_path / "c/cuts_test.jsonl.gz"), "--decoder", "beam", "--lm",
         str(tmp_path / "lm.arpa"), "--lm-lookahead", "--ilm-weight", "0.2", "--no-progress",
         "--json", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["lm"]["lookahead"] is True and r["lm"]["ilm_weight"] == 0.2
    assert r["utterances"] >= 1 and r["systems"]["chorus"]["overall"]["wer"] >= 0


def test_load_manifest_labels_voices_heard_in_training(tmp_path) -> None:
    """Dev mixes training voices with dev-held-out ones: each utterance is labelled by the
    corpus's voices.json (or an explicit one); a missing or malformed file is named."""
    from training.data.synth.corpus import SynthConfig, synthesize_corpus
    from training.eval.run import load_manifest

    synthesize_corpus(SynthConfig(out=tmp_path / "c", hours=0.01, seed=3, jobs=2,
                                  engines=("espeak-ng",),
                                  split_weights={"train": 0.0, "dev": 1.0, "test": 0.0}),
                      progress=False)
    manifest = tmp_path / "c/cuts_dev.jsonl.gz"
    train = set(json.loads((tmp_path / "c/voices.json").read_text())["train"])
    utts = load_manifest(manifest)
    assert {u.heard for u in utts} == {"heard", "unseen"}  # seed 3: 11 heard, 2 unseen
    assert all((u.heard == "heard") == (u.voice in train) for u in utts)
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"train": [utts[0].voice]}))
    relabelled = load_manifest(manifest, voices=one)
    assert [u.heard for u in relabelled] == ["heard" if u.voice == utts[0].voice else "unseen"
                                             for u in utts]
    with pytest.raises(FileNotFoundError, match="voices file not found"):
        load_manifest(manifest, voices=tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"test": []}))
    with pytest.raises(ValueError, match='"train" list'):
        load_manifest(manifest, voices=bad)
    (tmp_path / "c/voices.json").unlink()  # a corpus without one: unknown, not guessed
    assert {u.heard for u in load_manifest(manifest)} == {"?"}


def test_eval_cli_missing_manifest(tmp_path) -> None:
    from tests.models.test_cli import tiny_bundle

    bundle = tiny_bundle(tmp_path / "b")
    proc = subprocess.run([sys.executable, "-m", "clients.cli", "eval", "--bundle", str(bundle),
                           "--manifest", str(tmp_path / "none.jsonl.gz")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "manifest not found" in proc.stderr


@settings(max_examples=200, deadline=None)
@given(pairs=st.lists(st.tuples(st.text("ab c", min_size=1, max_size=12).filter(str.strip),
                                st.text("ab c", max_size=12)), min_size=1, max_size=4))
def test_levenshtein_counts_equal_jiwers(pairs) -> None:
    """The jiwer-free dev counts (the GPU machine has no jiwer) equal jiwer's."""
    from training.eval.metrics import edit_counts, levenshtein_counts

    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    assert levenshtein_counts(refs, hyps) == edit_counts(refs, hyps)


def test_eval_cli_rescores_the_nbest_with_a_neural_lm(tmp_path) -> None:
    """`chorus eval --rescore-lm DIR` (beam): the shipped model's finals are rescored and the
    result records the rescorer; with the greedy decoder the option is refused by name."""
    from training.data.synth.corpus import SynthConfig, synthesize_corpus
    from training.lm.neural import NeuralTrainConfig, train

    synthesize_corpus(SynthConfig(out=tmp_path / "c", hours=0.003, seed=3, jobs=2,
                                  engines=("flite",),
                                  split_weights={"train": 0.0, "dev": 0.0, "test": 1.0}),
                      progress=False)
    text = [([], "set an alarm for seven".split()), ([], "what time is it".split())] * 10
    train(NeuralTrainConfig(embed=8, hidden=8, max_steps=5, min_count=1), text, None,
          tmp_path / "lm", progress=False)
    manifest = str(tmp_path / "c/cuts_test.jsonl.gz")
    base = [sys.executable, "-m", "clients.cli", "eval", "--manifest", manifest,
            "--rescore-lm", str(tmp_path / "lm"), "--rescore-weight", "0.5", "--no-progress"]
    proc = subprocess.run([*base, "--decoder", "beam", "--json", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["rescore"] == {"lm": str(tmp_path / "lm"), "weight": 0.5, "nbest": 8, "type": "lstm"}
    assert len(r["hypotheses"]) == r["utterances"] >= 1
    proc = subprocess.run([*base, "--decoder", "greedy"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0 and "needs the beam decoder" in proc.stderr
