"""A real (small) synthesized corpus: every installed engine, real manifests, split asserted."""

import hashlib
import json
import logging
from pathlib import Path

import pytest
import soundfile as sf

from training.data.synth import engines as engines_mod
from training.data.synth.corpus import SynthConfig, available_voices, synthesize_corpus
from training.data.text.normalize import is_normalized

SPLIT_WEIGHTS = {"train": 0.5, "dev": 0.2, "test": 0.3}  # small corpus, every split populated


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("corpus")
    cfg = SynthConfig(out=out, hours=0.02, seed=11, jobs=2, split_weights=SPLIT_WEIGHTS, block=16)
    return out, synthesize_corpus(cfg, progress=False)


def load_cuts(out: Path, split: str):
    from lhotse import CutSet

    return CutSet.from_file(out / f"cuts_{split}.jsonl.gz")


def test_manifests_and_audio(corpus) -> None:
    out, stats = corpus
    assert stats["hours"] >= 0.02 and stats["failures"] == 0
    assert len(stats["engines"]) >= 3
    for split in ("train", "dev", "test"):
        cuts = load_cuts(out, split)
        assert len(cuts) > 0, split
        for cut in cuts:
            sup = cut.supervisions[0]
            assert is_normalized(sup.text)
            assert sup.speaker.startswith(cut.custom["engine"] + ":")
            info = sf.info(cut.recording.sources[0].source)
            assert info.samplerate == 16000 and info.channels == 1
            assert abs(info.duration - cut.duration) < 1e-3
            audio = cut.load_audio()
            assert audio.shape == (1, cut.num_samples)
            assert abs(audio).max() > 0.05  # speech, not silence


def test_test_split_has_unseen_voices_and_sentences(corpus) -> None:
    out, _ = corpus
    train, dev, test = (load_cuts(out, s) for s in ("train", "dev", "test"))
    train_voices = {c.supervisions[0].speaker for c in train}
    train_texts = {c.supervisions[0].text for c in train}
    test_voices = {c.supervisions[0].speaker for c in test}
    assert test_voices and not test_voices & train_voices
    assert not {c.supervisions[0].text for c in test} & train_texts
    assert not {c.supervisions[0].text for c in dev} & train_texts
    pools = json.loads((out / "voices.json").read_text())
    assert not set(pools["test"]) & set(pools["train"])  # the whole inventory, not just used


def test_deterministic_for_a_seed_whatever_the_jobs(corpus, tmp_path) -> None:
    out, _ = corpus
    cfg = SynthConfig(out=tmp_path, hours=0.02, seed=11, jobs=1, split_weights=SPLIT_WEIGHTS,
                      block=16)
    synthesize_corpus(cfg, progress=False)

    def digest(root: Path) -> dict[str, tuple[str, str, str]]:
        result = {}
        for split in ("train", "dev", "test"):
            for c in load_cuts(root, split):
                audio = Path(c.recording.sources[0].source).read_bytes()
                result[c.id] = (c.supervisions[0].text, c.supervisions[0].speaker,
                                hashlib.sha1(audio).hexdigest())
        return result

    assert digest(out) == digest(tmp_path)


def test_a_corpus_of_new_sentences_keeps_the_first_corpus_held_out_voices(corpus, tmp_path) -> None:
    """`voice_seed` (`chorus data synth --voice-seed`): a second corpus drawn with another seed
    (other sentences) but the first corpus's voice split has the first's voice pools, so none
    of its training speech is spoken by a voice of the first corpus's test split; its own seed
    alone would split the voices another way."""
    out, _ = corpus
    first = json.loads((out / "voices.json").read_text())
    cfg = SynthConfig(out=tmp_path / "more", hours=0.01, seed=12, voice_seed=11, jobs=2,
                      split_weights=SPLIT_WEIGHTS, block=16, id_prefix="s12-")
    stats = synthesize_corpus(cfg, progress=False)
    assert stats["command"]["voice_seed"] == 11
    assert json.loads((tmp_path / "more" / "voices.json").read_text()) == first
    train = load_cuts(tmp_path / "more", "train")
    assert len(train) > 0 and all(c.id.startswith("s12-") for c in train)
    assert not {c.supervisions[0].speaker for c in train} & set(first["test"])
    assert {c.supervisions[0].text for c in train} != {
        c.supervisions[0].text for c in load_cuts(out, "train")}  # other sentences
    from training.data.synth.split import split_voices

    own = split_voices(available_voices(SynthConfig(out=tmp_path, hours=0.01)), seed=12)
    assert sorted(v.id for v in own["test"]) != sorted(first["test"])


def test_missing_engine_is_skipped_with_a_warning(tmp_path, monkeypatch, caplog) -> None:
    class Missing(engines_mod.Engine):
        name = "missing-tts"
        install_hint = "Debian package missing-tts-voices"
        binaries = ("chorus-no-such-tts-binary",)

        def voices(self):
            return []

    monkeypatch.setitem(engines_mod.ENGINES, "missing-tts", Missing())
    with caplog.at_level(logging.WARNING):
        voices = available_voices(SynthConfig(out=tmp_path, hours=0.01,
                                              engines=("missing-tts", "flite")))
    assert voices and all(v.engine == "flite" for v in voices)
    assert "missing-tts-voices" in caplog.text


def test_unknown_engine_is_an_error(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown engine 'nope'"):
        available_voices(SynthConfig(out=tmp_path, hours=0.01, engines=("nope",)))


def test_derived_voices_reach_the_corpus_with_their_base_speakers_split(tmp_path) -> None:
    """--min-voices-per-engine 8 on pico (2 voices): utterances of derived voices (+vsK) in the
    manifests, counted in the stats, and no base speaker both in train and (derived or not)
    in test; --id-prefix prefixes every utterance id."""
    cfg = SynthConfig(out=tmp_path / "c", hours=0.01, seed=1, jobs=2, engines=("pico",),
                      engine_weights={"pico": 1.0}, split_weights=SPLIT_WEIGHTS,
                      min_voices_per_engine=8, id_prefix="derived-")
    stats = synthesize_corpus(cfg, progress=False)
    assert stats["voice_inventory_per_engine"] == {"pico": 8}
    assert stats["command"]["min_voices_per_engine"] == 8
    for s in ("train", "dev", "test"):  # --id-prefix: ids (and WAV names) distinct from seed 1's
        for c in load_cuts(cfg.out, s):
            assert c.id.startswith(f"derived-{s}-"), c.id
            assert Path(c.recording.sources[0].source).name == f"{c.id}.wav"
    speakers = {s: {c.supervisions[0].speaker for c in load_cuts(cfg.out, s)}
                for s in ("train", "test")}
    assert any("+vs" in v for v in speakers["train"] | speakers["test"]), speakers
    base = {s: {v.split("+vs")[0] for v in speakers[s]} for s in speakers}
    assert base["train"] and base["test"] and not base["train"] & base["test"], base
