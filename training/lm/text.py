"""Language-model training text: sentences of the TRAIN split of the synthetic corpus's text.

The text pool is the one the corpus is synthesized from (fortunes, templates, word sequences;
optionally WordNet's glosses and examples), restricted to sentences whose stable hash puts them
in the train split, so no dev or test sentence ever reaches the LM. Template domains are drawn
many times (their sentences are cheap and varied); the word list itself is returned as
vocabulary, not as sentences.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from training.data.synth.split import text_split
from training.data.text.sources import fortune_sentences, word_list, word_sequence, wordnet_sentences
from training.data.text.templates import TEMPLATES


@dataclass(frozen=True)
class LmTextConfig:
    template_sentences: int = 20000  # per template domain
    word_sequences: int = 5000
    seed: int = 0
    wordnet: bool = False  # also WordNet's glosses and usage examples (train split only)


def train_sentences(cfg: LmTextConfig) -> Iterator[str]:
    rng = random.Random(f"lm-text-{cfg.seed}")
    for s in fortune_sentences():
        if text_split(s) == "train":
            yield s
    for name in sorted(TEMPLATES):
        for _ in range(cfg.template_sentences):
            text, _speak = TEMPLATES[name](rng)
            if text_split(text) == "train":
                yield text
    for s in wordnet_sentences() if cfg.wordnet else []:
        if text_split(s) == "train":
            yield s
    words = word_list()
    for _ in range(cfg.word_sequences if words else 0):
        text = word_sequence(rng, words)
        if text_split(text) == "train":
            yield text


def vocabulary() -> list[str]:
    return word_list()
