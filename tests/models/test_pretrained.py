"""The shipped default bundle: loads, transcribes fresh synthetic speech, streams == offline.

The audio is synthesized here, now, from held-out (test split) voices and sentences, so these
tests exercise the real model on speech it never saw.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from models.audio import load_audio
from models.bundle import DEFAULT_BUNDLE, load
from models.streaming import StreamingTranscriber, transcribe


@pytest.fixture(scope="module")
def bundle():
    return load()  # the default: models/pretrained/default


@pytest.fixture(scope="module")
def test_split(tmp_path_factory) -> Path:
    from training.data.synth.corpus import SynthConfig, synthesize_corpus

    out = tmp_path_factory.mktemp("heldout")
    synthesize_corpus(SynthConfig(out=out, hours=0.03, seed=11, jobs=2,
                                  split_weights={"train": 0.0, "dev": 0.0, "test": 1.0}),
                      progress=False)
    return out


def test_default_bundle_is_shipped_and_small() -> None:
    files = {p.name: p.stat().st_size for p in DEFAULT_BUNDLE.iterdir()}
    assert {"bundle.json", "model.safetensors", "tokens.txt", "summary.json"} <= set(files)
    assert sum(files.values()) < 50 * 2**20


SENTENCES = ["turn on the kitchen lights", "what time is it", "call mom", "play some music",
             "set a timer for ten minutes", "open the door", "good morning",
             "the weather is nice today"]


def test_transcribes_freshly_synthesized_sentences(bundle, tmp_path) -> None:
    """A regression guard at the shipped model's measured quality (docs/RESULTS.md), decoding
    as shipped (beam + its word LM): pooled CER 0.014 and 6 of 8 sentences exactly right
    (espeak-ng en-us) when shipped (2026-11-29, sessions 4 and 5; the session-3 model: 0.043,
    5 of 8); not all are exact yet (the issue's target is not met)."""
    import jiwer

    hyps = []
    for i, text in enumerate(SENTENCES):
        wav = tmp_path / f"{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), text], check=True)
        audio = load_audio(wav, sample_rate=16_000)  # espeak-ng writes 22.05 kHz: resampled
        hyps.append(transcribe(bundle, audio).text)
    assert jiwer.cer(SENTENCES, hyps) <= 0.06, list(zip(SENTENCES, hyps, strict=True))
    assert sum(h == s for h, s in zip(hyps, SENTENCES, strict=True)) >= 5, hyps


def test_streaming_equals_full_utterance_on_held_out_speech(bundle, test_split) -> None:
    from training.eval.run import load_manifest, transcribe_ours

    utts = load_manifest(test_split / "cuts_test.jsonl.gz")
    assert len(utts) >= 10
    batched, _ = transcribe_ours(bundle, utts, decoder=bundle.decoding.decoder,
                                 beam_size=bundle.decoding.beam_size, lm=bundle.lm, progress=False)
    rng = np.random.default_rng(0)
    for u, batch_text in zip(utts, batched, strict=True):
        audio = u.audio()
        whole = transcribe(bundle, audio)
        stream = StreamingTranscriber(bundle)
        pos = 0
        while pos < audio.size:
            n = int(rng.integers(160, 8000))  # 10 ms .. 0.5 s pieces
            stream.accept_waveform(audio[pos : pos + n])
            pos += n
        assert stream.finalize() == whole, u.id
        assert whole.text == batch_text, u.id
