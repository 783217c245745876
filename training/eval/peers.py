"""Offline peer recognisers to compare against on the same audio.

pocketsphinx (CMU Sphinx, PyPI wheel) bundles a US English acoustic model, dictionary and
3-gram language model, so it runs offline like we do. Its output is normalised with the same
text normaliser as our references (digits to words, lowercase, a-z and apostrophes).
"""

from __future__ import annotations

import numpy as np

from models.audio import to_pcm16
from training.data.text.normalize import normalize_text

PEERS = ("pocketsphinx",)


class PocketSphinx:
    name = "pocketsphinx"
    sample_rate = 16_000

    def __init__(self) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError as exc:
            raise RuntimeError("the pocketsphinx peer needs `pip install pocketsphinx` "
                               "(in the train extra)") from exc
        self.decoder = Decoder(samprate=self.sample_rate, loglevel="FATAL")

    def transcribe(self, samples: np.ndarray) -> str:
        """Float samples in [-1, 1] at 16 kHz -> normalised text."""
        pcm = to_pcm16(samples)
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        text = hyp.hypstr if hyp is not None else ""
        return normalize_text(text) or ""


def make_peer(name: str) -> PocketSphinx:
    if name == "pocketsphinx":
        return PocketSphinx()
    raise ValueError(f"unknown peer {name!r}; known: {PEERS}")
