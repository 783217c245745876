"""`chorus data prepare`: tiny corpora fabricated in each real layout (LibriSpeech, Common Voice,
Kaldi: their exact directory and transcript formats, audio synthesized by espeak-ng) become
16 kHz manifests with normalised text that `chorus train` trains on for a few steps."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from models.audio import load_audio
from tests.training.test_train import overrides
from training.config import load_config
from training.data.prepare import PrepareError, parse_splits, prepare
from training.train import train

SENTENCES = ["TURN ON THE KITCHEN LIGHTS", "What time is it?", "Call mom at 5.",
             "PLAY SOME MUSIC", "Set a timer for ten minutes", "open the door please"]
NORMALISED = ["turn on the kitchen lights", "what time is it", "call mom at five",
              "play some music", "set a timer for ten minutes", "open the door please"]


def speech(text: str, tmp: Path, rate: int) -> np.ndarray:
    wav = tmp / "espeak.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), text], check=True)
    return load_audio(wav, sample_rate=rate)


def librispeech(root: Path) -> Path:
    """LibriSpeech/<part>/<speaker>/<chapter>/<spk>-<ch>-<utt>.flac + <spk>-<ch>.trans.txt."""
    corpus = root / "LibriSpeech"
    for part, idx in (("train-clean-100", [0, 1, 2, 3]), ("dev-clean", [4]), ("test-clean", [5])):
        spk, ch = "103", "1240"
        d = corpus / part / spk / ch
        d.mkdir(parents=True)
        lines = []
        for n, i in enumerate(idx):
            uid = f"{spk}-{ch}-{n:04d}"
            sf.write(d / f"{uid}.flac", speech(SENTENCES[i], root, 16000), 16000)
            lines.append(f"{uid} {SENTENCES[i].upper()}")
        (d / f"{spk}-{ch}.trans.txt").write_text("\n".join(lines) + "\n")
    return corpus


def commonvoice(root: Path) -> Path:
    """cv-corpus-*/en/{train,dev,test}.tsv + en/clips/*.mp3 (48 kHz), the release's columns."""
    corpus = root / "cv-corpus-17.0-2024-03-15"
    clips = corpus / "en" / "clips"
    clips.mkdir(parents=True)
    cols = ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes",
            "down_votes", "age", "gender", "accents", "variant", "locale", "segment"]
    for split, idx in (("train", [0, 1, 2, 3]), ("dev", [4]), ("test", [5])):
        with open(corpus / "en" / f"{split}.tsv", "w", newline="") as f:
            w = csv.writer(f, delimiter="\t")
            w.writerow(cols)
            for i in idx:
                name = f"common_voice_en_{1000 + i}.mp3"
                sf.write(clips / name, speech(SENTENCES[i], root, 48000), 48000, format="MP3")
                w.writerow([f"client{i % 2}", name, f"s{i}", SENTENCES[i], "", "2", "0",
                            "twenties", "male_masculine", "", "", "en", ""])
    return corpus


def kaldi(root: Path) -> Path:
    """A data dir: wav.scp (a file and a `sox ... |` pipe), segments, text, utt2spk."""
    d = root / "kaldi" / "train"
    d.mkdir(parents=True)
    a = np.concatenate([speech(SENTENCES[0], root, 16000), np.zeros(8000, np.float32),
                        speech(SENTENCES[1], root, 16000)])
    sf.write(root / "rec1.wav", a, 16000)
    sf.write(root / "rec2.wav", speech(SENTENCES[2], root, 22050), 22050)
    n0 = len(speech(SENTENCES[0], root, 16000)) / 16000
    (d / "wav.scp").write_text(f"rec1 {root / 'rec1.wav'}\n"
                               f"rec2 sox {root / 'rec2.wav'} -t wav -r 16000 - |\n")
    (d / "segments").write_text(f"u1 rec1 0.00 {n0:.2f}\nu2 rec1 {n0 + 0.5:.2f} {len(a) / 16000:.2f}\n"
                                f"u3 rec2 0.00 {len(speech(SENTENCES[2], root, 16000)) / 16000:.2f}\n")
    (d / "text").write_text(f"u1 {SENTENCES[0]}\nu2 {SENTENCES[1]}\nu3 {SENTENCES[2]}\n")
    (d / "utt2spk").write_text("u1 s1\nu2 s1\nu3 s2\n")
    return root / "kaldi"


@pytest.mark.parametrize("layout", ["librispeech", "commonvoice", "kaldi"])
def test_prepare_round_trips_into_training(layout: str, tmp_path) -> None:
    from lhotse import CutSet

    corpus = {"librispeech": librispeech, "commonvoice": commonvoice, "kaldi": kaldi}[layout](tmp_path)
    out = tmp_path / "manifests"
    stats = prepare(layout, corpus, out)
    expect = {"kaldi": {"train": 3, "dev": 0, "test": 0}}.get(layout, {"train": 4, "dev": 1, "test": 1})
    assert stats["splits"] == expect, stats
    train_cuts = CutSet.from_file(out / "cuts_train.jsonl.gz")
    texts = sorted(c.supervisions[0].text for c in train_cuts)
    assert texts == sorted(NORMALISED[: expect["train"]])  # upper case, digits, punctuation
    for cut in train_cuts:
        audio = cut.load_audio()
        assert cut.sampling_rate == 16000 and audio.shape[0] == 1
        assert abs(audio.shape[1] / 16000 - cut.duration) < 0.02
        assert 0.05 < np.abs(audio).max() <= 1.0  # real speech, not silence
        assert cut.supervisions[0].custom["engine"] == layout
    # chorus train consumes them for a few steps (dev: the train cuts where there is no dev)
    dev = out / ("cuts_dev.jsonl.gz" if expect["dev"] else "cuts_train.jsonl.gz")
    args = [o for o in overrides(out, tmp_path / "run", 3) if not o.startswith("data.dev")]
    cfg = load_config(None, [*args, f"data.dev=[{dev}]", "optim.warmup_steps=1"])
    bundle = train(cfg, progress=False)
    assert (bundle / "model.safetensors").is_file()


def test_bad_directories_are_named(tmp_path) -> None:
    with pytest.raises(PrepareError, match="no LibriSpeech part directory"):
        prepare("librispeech", tmp_path, tmp_path / "o")
    with pytest.raises(PrepareError, match=r"expected en/\{train,dev,test\}.tsv"):
        prepare("commonvoice", tmp_path, tmp_path / "o")
    with pytest.raises(PrepareError, match="neither a Kaldi data directory"):
        prepare("kaldi", tmp_path, tmp_path / "o")
    with pytest.raises(PrepareError, match="corpus directory not found"):
        prepare("kaldi", tmp_path / "missing", tmp_path / "o")
    with pytest.raises(PrepareError, match="expected SPLIT=SUBDIR"):
        parse_splits(["training=x"])
    assert parse_splits(["train=train_960", "dev=dev_clean"]) == {"train": "train_960",
                                                                 "dev": "dev_clean"}
