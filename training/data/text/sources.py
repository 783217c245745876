"""Offline text sources: Debian fortunes (fortune-mod + fortunes), the system word list, and
WordNet's glosses and usage examples (Debian wordnet-base)."""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterator
from pathlib import Path

from training.data.text.normalize import normalize_text

log = logging.getLogger(__name__)

FORTUNE_DIR = Path("/usr/share/games/fortunes")
WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_FILES = {"noun": "data.noun", "verb": "data.verb", "adj": "data.adj", "adv": "data.adv"}
WORD_LIST = Path("/usr/share/dict/words")
MIN_WORDS = 3
MAX_WORDS = 24
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_NOISY = re.compile(r"https?:|www\.|[<>{}\[\]|\\_^~]|\t|\s{3,}|^\s*(--|Q:|A:)")


def _fortune_entries(path: Path) -> Iterator[str]:
    entry: list[str] = []
    for line in path.read_text(encoding="utf-8", errors="ignore").splitlines():
        if line.strip() == "%":
            if entry:
                yield "\n".join(entry)
            entry = []
        else:
            entry.append(line)
    if entry:
        yield "\n".join(entry)


def fortune_sentences(directory: Path = FORTUNE_DIR) -> list[str]:
    """Normalised, de-duplicated sentences of MIN_WORDS..MAX_WORDS words, sorted."""
    if not directory.is_dir():
        log.warning("no fortunes at %s: install Debian packages fortune-mod and fortunes", directory)
        return []
    out: set[str] = set()
    for path in sorted(directory.iterdir()):
        if path.suffix in {".dat", ".u8"} or not path.is_file():
            continue
        for entry in _fortune_entries(path):
            body = re.split(r"\n\s*--\s", entry)[0]  # drop the attribution
            for line in _SENTENCE_END.split(" ".join(body.split("\n"))):
                if _NOISY.search(line):
                    continue
                norm = normalize_text(line)
                if norm and MIN_WORDS <= len(norm.split()) <= MAX_WORDS:
                    out.add(norm)
    return sorted(out)


def word_list(path: Path = WORD_LIST) -> list[str]:
    """Lowercase dictionary words (no possessives, no proper nouns), sorted."""
    if not path.is_file():
        log.warning("no word list at %s: install Debian package wamerican", path)
        return []
    words = set()
    for w in path.read_text(encoding="utf-8", errors="ignore").split():
        if re.fullmatch(r"[a-z]{2,14}", w):
            words.add(w)
    return sorted(words)


def word_sequence(rng: random.Random, words: list[str]) -> str:
    return " ".join(rng.choice(words) for _ in range(rng.randint(3, 8)))


def wordnet_synsets(root: Path = WORDNET_DIR) -> Iterator[tuple[str, str, str, tuple[str, ...]]]:
    """(first lemma, part of speech, gloss, usage examples) of every synset in the WordNet 3.0
    data files (`offset lex_filenum ss_type w_cnt word lex_id ... | gloss; "example"; ...`)."""
    for pos, name in WORDNET_FILES.items():
        path = root / name
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="ignore").splitlines():
            if line.startswith(" ") or " | " not in line:
                continue  # the licence header
            head, gloss_part = line.split(" | ", 1)
            word = re.sub(r"\(.*\)$", "", head.split()[4].replace("_", " "))  # "(a)" markers
            parts = [p.strip() for p in gloss_part.split(";")]
            examples = tuple(p.strip('" ') for p in parts[1:] if p.startswith('"'))
            yield word, pos, parts[0], examples


def wordnet_sentences(root: Path = WORDNET_DIR) -> list[str]:
    """WordNet's glosses and usage examples as normalised sentences of MIN_WORDS..MAX_WORDS
    words, de-duplicated, sorted (none without wordnet-base)."""
    if not (root / "data.noun").is_file():
        log.warning("no WordNet at %s: install Debian package wordnet-base", root)
        return []
    out: set[str] = set()
    for _, _, gloss, examples in wordnet_synsets(root):
        for text in (gloss, *examples):
            norm = normalize_text(text)
            if norm and MIN_WORDS <= len(norm.split()) <= MAX_WORDS:
                out.add(norm)
    return sorted(out)
